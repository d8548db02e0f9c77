"""Logs an operator expects (issue 14, item 3): the access log (json and combined, reopened on SIGUSR1 in
one process and under `--workers 2`), X-Request-Id (kept from a trusted peer, generated otherwise, seen
upstream and logged), and the event log (`GET /api/v1/events`, `--log-format json`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.controlplane.events import DEFER, install_ring
from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import ProxyProcess, RawClient, child_pids
from tests.support import wait_until

COMBINED = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) HTTP/1\.[01]" (?P<status>\d+) '
    r'(?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" "(?P<app>[^"]*)" "(?P<pool>[^"]*)" "(?P<endpoint>[^"]*)" '
    r"(?P<generation>\d+) (?P<request_id>\S+) (?P<duration>[\d.]+)ms$"
)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def get(port: int, target: str, **headers: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{target}", headers=headers) as resp:
            assert resp.status == 200
            return {"status": resp.status, "body": await resp.read(), "headers": resp.headers}


async def test_access_log_json(upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    blue = await upstream("blue")
    server = await start_proxy(
        {"blue": [blue], "green": [await upstream("green")]}, access_log={"path": str(log), "format": "json"}
    )
    port = server.ports["active"]
    await get(port, "/color?x=1", Referer="http://example/")
    await get(server.ports["preview"], "/color")
    await wait_until(lambda: len(lines(log)) >= 2)
    entries = [json.loads(line) for line in lines(log)]
    first, second = entries
    assert first["method"] == "GET" and first["target"] == "/color?x=1" and first["status"] == 200
    assert first["client"] == "127.0.0.1" and first["pool"] == "blue" and first["endpoint"] == blue
    assert first["listener"] == "active" and first["app"] == "default" and first["generation"] == 1
    assert first["bytes_in"] == 0 and first["bytes_out"] > 0 and first["duration_ms"] >= 0
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", first["request_id"]) and first["aborted"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["pool"] == "green" and second["listener"] == "preview"
    assert first["request_id"] != second["request_id"]
    # Durations resolve below a millisecond (not the event loop's clock, which steps in whole ms in uvloop).
    for _ in range(5):
        await get(port, "/color")
    await wait_until(lambda: len(lines(log)) >= 7)
    durations = [json.loads(line)["duration_ms"] for line in lines(log)]
    assert any(d % 1 for d in durations), durations


async def test_access_log_combined(upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    blue = await upstream("blue")
    server = await start_proxy(
        {"blue": [blue], "green": [await upstream("green")]}, access_log={"path": str(log), "format": "combined"}
    )
    await get(server.ports["active"], "/color", Referer="http://example/a", **{"User-Agent": 'curl/8 "x"'})
    line = (await wait_until(lambda: lines(log)))[0]
    match = COMBINED.match(line)
    assert match is not None, line
    assert match["client"] == "127.0.0.1" and match["method"] == "GET" and match["target"] == "/color"
    assert match["status"] == "200" and int(match["bytes"]) > 0 and match["referer"] == "http://example/a"
    assert match["agent"] == r"curl/8 \x22x\x22"  # quotes escaped as nginx does
    assert (match["app"], match["pool"], match["endpoint"], match["generation"]) == ("default", "blue", blue, "1")


async def test_request_id_kept_from_trusted_peer(
    upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    log = tmp_path / "access.json"
    server = await start_proxy(
        {"blue": [await upstream("blue")], "green": [await upstream("green")]}, access_log={"path": str(log)}
    )
    port = server.ports["active"]
    echoed = json.loads((await get(port, "/echo", **{"X-Request-Id": "abc-123"}))["body"])
    seen = [v for k, v in echoed["headers"] if k.lower() == "x-request-id"]
    assert seen == ["abc-123"]  # loopback is trusted by default: kept, once
    generated = json.loads((await get(port, "/echo"))["body"])
    made = [v for k, v in generated["headers"] if k.lower() == "x-request-id"]
    assert len(made) == 1 and re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", made[0])
    await wait_until(lambda: len(lines(log)) >= 2)
    entries = [json.loads(line) for line in lines(log)]
    assert [e["request_id"] for e in entries] == ["abc-123", made[0]]


async def test_request_id_replaced_from_untrusted_peer(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    server = await start_proxy(
        {"blue": [await upstream("blue")], "green": [await upstream("green")]}, trusted_proxies=["10.0.0.0/8"]
    )
    echoed = json.loads((await get(server.ports["active"], "/echo", **{"X-Request-Id": "forged"}))["body"])
    seen = [v for k, v in echoed["headers"] if k.lower() == "x-request-id"]
    assert len(seen) == 1 and seen[0] != "forged" and re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", seen[0])


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigusr1_reopens_access_log(upstream: StartUpstream, tmp_path: Path, workers: str) -> None:
    log = tmp_path / "access.log"
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green", access_log={"path": str(log)}).start(
        "--workers", workers
    )
    assert proxy.proc is not None
    try:
        port = proxy.ports["active"]
        for i in range(6):  # fresh connections: every worker serves some
            await RawClient(port).request(f"/color?before={i}", close=True)
        await wait_until(lambda: len(lines(log)) == 6, message=lambda: f"access log: {lines(log)}")
        rotated = tmp_path / "access.log.1"
        os.rename(log, rotated)  # as logrotate does; the proxy still writes to the moved file until SIGUSR1
        proxy.proc.send_signal(signal.SIGUSR1)
        await wait_until(log.exists, message="the access log reopened at its path")
        for i in range(6):
            await RawClient(port).request(f"/color?after={i}", close=True)
        await wait_until(lambda: len(lines(log)) == 6, message=lambda: f"new access log: {lines(log)}")
        old, new = lines(rotated), lines(log)
        assert len(old) == 6 and all("before=" in line for line in old)
        assert all("after=" in line for line in new)
        assert all(json.loads(line)["status"] == 200 for line in old + new)  # whole lines, never interleaved
        assert len(child_pids(proxy.proc.pid)) == int(workers)  # no worker died of the signal
    finally:
        code, output = await proxy.stop()
    assert code == 0, output


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_worker_logs_in_the_supervisors_format(upstream: StartUpstream, tmp_path: Path, workers: str) -> None:
    """With `--log-format json`, what a worker has to say (here: its access log cannot be reopened, the
    directory is gone) is a JSON line on stderr like the supervisor's events, and every line is one."""
    folder = tmp_path / "logs"
    folder.mkdir()
    pools = {"blue": [await upstream("blue")]}
    proxy = ProxyProcess(tmp_path, pools, "blue", None, access_log={"path": str(folder / "access.log")})
    await proxy.start("--workers", workers, "--log-format", "json", "--log-level", "warning")
    assert proxy.proc is not None
    try:
        await RawClient(proxy.ports["active"]).request("/color", close=True)
        folder.rename(tmp_path / "gone")
        proxy.proc.send_signal(signal.SIGUSR1)
        await wait_until(
            lambda: proxy.proc is not None and proxy.proc.output.count("access_log_error") >= int(workers),
            message=lambda: f"each worker's error: {proxy.proc.output if proxy.proc else ''}",
        )
        await RawClient(proxy.ports["active"]).request("/color", close=True)  # it serves on, logging to the old file
    finally:
        code, output = await proxy.stop()
    assert code == 0, output
    # stdout carries the lifecycle lines (`bluegreen proxy ...`), stderr the event log: one JSON object a line
    records = [json.loads(line) for line in output.splitlines() if not line.startswith("bluegreen proxy")]
    errors = [r for r in records if r["event"] == "access_log_error"]
    assert len(errors) == int(workers), output
    assert all(r["level"] == "error" and r["path"] == str(folder / "access.log") for r in errors), errors
    assert "cannot reopen the access log" in errors[0]["message"]
    assert (tmp_path / "gone" / "access.log").read_text().count("\n") == 2  # nothing lost


async def events(admin: int, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin}/api/v1/events", params=params) as resp:
            assert resp.status == 200
            return list((await resp.json())["events"])


async def test_events_flip_reload_health(upstream: StartUpstream, tmp_path: Path) -> None:
    """A flip (who, from what to what, generation, acknowledgement time), a reload and an endpoint's health
    change, from a real `bluegreen proxy` whose event log is JSON lines on stderr."""
    blue, green = await upstream("blue"), await upstream("green")
    dead = "127.0.0.1:1"  # nothing listens there
    health = {"path": "/healthz", "interval": "200ms", "timeout": "100ms", "unhealthy_threshold": 1}
    proxy = ProxyProcess(tmp_path, {"blue": [blue], "green": [green]}, "blue", "green", health_check=health)
    await proxy.start("--log-format", "json")
    admin = proxy.ports["admin"]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{admin}/api/v1"
            async with session.post(f"{url}/switch", json={"active": "green"}) as resp:
                assert resp.status == 200
            async with session.post(f"{url}/reload") as resp:
                assert resp.status == 200
            async with session.put(f"{url}/pools/blue", json={"endpoints": [blue, dead]}) as resp:
                assert resp.status == 200

        def kinds(items: list[dict[str, Any]]) -> list[str]:
            return [e["event"] for e in items]

        seen = await wait_until(
            lambda: _having(events(admin), "endpoint_health", endpoint=dead), message="the dead endpoint's event"
        )
        flip = next(e for e in seen if e["event"] == "flip")
        assert (flip["active_from"], flip["active_to"], flip["preview_to"]) == ("blue", "green", "blue")
        assert flip["generation"] == 2 and flip["ack_ms"] >= 0 and flip["level"] == "info"
        assert flip["client"] == "127.0.0.1" and flip["token"] == "none"
        assert {"flip", "reload", "endpoint_health"} <= set(kinds(seen))
        reload = next(e for e in seen if e["event"] == "reload")
        assert reload["client"] == "127.0.0.1" and reload["generation"] == 2
        sick = next(e for e in seen if e["event"] == "endpoint_health" and e["endpoint"] == dead)
        assert (sick["pool"], sick["after"], sick["level"]) == ("blue", "unhealthy", "warning")
        assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)  # newest last
        assert len(await events(admin, limit="1")) == 1
    finally:
        code, output = await proxy.stop()
    assert code == 0, output
    logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(e["event"] == "flip" and e["active_to"] == "green" for e in logged), output


async def _having(items: Any, kind: str, **fields: Any) -> list[dict[str, Any]] | None:
    """The events, once one of `kind` (with these fields) is among them."""
    got: list[dict[str, Any]] = await items
    wanted = [e for e in got if e["event"] == kind and all(e.get(k) == v for k, v in fields.items())]
    return got if wanted else None


async def test_events_worker_restarted(upstream: StartUpstream, tmp_path: Path) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", "2")
    assert proxy.proc is not None
    try:
        victim = sorted(child_pids(proxy.proc.pid))[0]
        os.kill(victim, signal.SIGKILL)
        seen = await wait_until(lambda: _having(events(proxy.ports["admin"]), "worker_restarted"), within=20)
        exited = next(e for e in seen if e["event"] == "worker_exited")
        restarted = next(e for e in seen if e["event"] == "worker_restarted")
        assert exited["pid"] == victim and exited["level"] == "warning"
        assert restarted["worker"] == exited["worker"] and restarted["pid"] != victim
    finally:
        code, output = await proxy.stop()
    assert code == 0, output


async def test_events_drain_started_and_finished(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")], "red": [await upstream("red")]}
    server = await start_proxy(pools)
    admin = server.ports["admin"]
    async with aiohttp.ClientSession() as session:
        body = {"active": "green", "preview": "red"}  # blue is no route's any more: it drains
        async with session.post(f"http://127.0.0.1:{admin}/api/v1/switch", json=body) as resp:
            assert resp.status == 200
    seen = await wait_until(lambda: _having(events(admin), "drain_finished", pool="blue"), within=15)
    mine = [e for e in seen if e.get("pool") == "blue" and e["event"].startswith("drain")]
    assert [e["event"] for e in mine][-2:] == ["drain_started", "drain_finished"]


async def test_a_flip_record_comes_a_moment_after_the_answer_with_the_flips_time(
    upstream: StartUpstream, start_proxy: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The flip's record waits `DEFER` (its client is woken on the proxy's core and reads first), keeps the
    flip's time, and is never missed: reading the event log writes it at once, in order with the others."""
    server = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    caplog.set_level(logging.INFO, logger="bluegreen")
    before = time.time()
    await server.control.switch("green")
    after = time.time()
    assert not [r for r in caplog.records if getattr(r, "event", None) == "flip"]  # not yet: after the answer
    await asyncio.sleep(DEFER * 20)
    (timed,) = [r for r in caplog.records if getattr(r, "event", None) == "flip"]
    assert before <= timed.created <= after  # the flip's time, not the later one of its writing
    await server.control.switch("blue")
    flips = [e for e in install_ring().recent() if e["event"] == "flip"]  # read at once: written now
    assert [e["active_to"] for e in flips[-2:]] == ["green", "blue"] and flips[-1]["seq"] > flips[-2]["seq"]
    await server.control.switch("green")
    await server.stop(grace=0.1)  # and on the way out
    last = [r for r in caplog.records if getattr(r, "event", None) == "flip"][-1]
    assert last.__dict__["fields"]["active_to"] == "green"
