"""`--workers N`: one admin, flips through the shared route word, pools acknowledged by every worker, a dead
worker restarted on the current state."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import yaml

from tests.proxy.conftest import StartUpstream
from tests.proxy.support import ProxyProcess, RawClient, child_pids as children, keep_requesting
from tests.support import REPO, Process, wait_for_port, wait_until


async def colors_on_fresh_connections(port: int, n: int) -> set[str]:
    seen = set()
    for _ in range(n):
        client = RawClient(port)
        resp = await client.request(close=True)
        assert resp.status == 200
        seen.add(resp.headers[b"x-served-by-color"].decode())
    return seen


async def test_dead_worker_restarts_on_current_generation(upstream: StartUpstream, tmp_path: Path) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", "2")
    assert proxy.proc is not None
    admin = f"http://127.0.0.1:{proxy.ports['admin']}"
    try:
        workers = children(proxy.proc.pid)
        assert len(workers) == 2
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{admin}/api/v1/switch", json={"active": "green"}) as resp:
                assert resp.status == 200 and (await resp.json())["generation"] == 2
            assert await colors_on_fresh_connections(proxy.ports["active"], 40) == {"green"}

            victim = sorted(workers)[0]
            os.kill(victim, signal.SIGKILL)
            supervisor = proxy.proc.pid

            def restarted() -> bool:
                now = children(supervisor)
                return len(now) == 2 and victim not in now

            await wait_until(restarted, 15, message="the killed worker restarted")
            # The new worker serves generation 2 from its first request.
            assert await colors_on_fresh_connections(proxy.ports["active"], 40) == {"green"}
            async with session.post(f"{admin}/api/v1/switch", json={"active": "blue"}) as resp:
                assert resp.status == 200 and (await resp.json())["generation"] == 3
            assert await colors_on_fresh_connections(proxy.ports["active"], 40) == {"blue"}
            async with session.get(f"{admin}/api/v1/pools") as resp:
                body = await resp.json()
            assert {p["name"] for p in body["pools"]} == {"blue", "green"}
            async with session.get(f"{admin}/metrics") as resp:
                text = await resp.text()
            assert 'bluegreen_requests_total{app="default",listener="active",pool="blue",status_class="2xx"}' in text
    finally:
        code, out = await proxy.stop()
    assert code == 0, out


async def test_a_flip_needs_no_round_trip_to_the_workers(upstream: StartUpstream, tmp_path: Path) -> None:
    """With every worker frozen, a flip still answers at once (it is a store to the shared route word, not a
    message a worker must acknowledge), nobody is killed as a laggard, and each worker's first request after
    it wakes up is served by the new routes."""
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", "2")
    assert proxy.proc is not None
    admin = f"http://127.0.0.1:{proxy.ports['admin']}"
    workers = children(proxy.proc.pid)
    assert len(workers) == 2
    try:
        assert await colors_on_fresh_connections(proxy.ports["active"], 10) == {"blue"}
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with aiohttp.ClientSession() as session:
                # Well under the 5 s after which a worker that does not acknowledge a message is killed.
                async with asyncio.timeout(3):
                    async with session.post(f"{admin}/api/v1/switch", json={"active": "green"}) as resp:
                        assert resp.status == 200 and (await resp.json())["generation"] == 2
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        assert await colors_on_fresh_connections(proxy.ports["active"], 40) == {"green"}
        assert children(proxy.proc.pid) == workers
    finally:
        code, out = await proxy.stop()
    assert code == 0, out


async def test_reload_replacing_the_active_pool_keeps_serving(upstream: StartUpstream, tmp_path: Path) -> None:
    """A reload that removes the active pool and routes a new one: workers learn the new pool before the route
    word names it, and drop the old one only after the word moved, so no request meets a missing pool."""
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", "2")
    admin = f"http://127.0.0.1:{proxy.ports['admin']}"
    config = yaml.safe_load(proxy.path.read_text())
    failures: list[str] = []
    colors: list[str] = []

    try:
        stop = time.monotonic() + 1.5
        load = asyncio.gather(*(keep_requesting(proxy.ports["active"], stop, failures, colors) for _ in range(8)))
        await wait_until(lambda: "blue" in colors, message="traffic on blue")
        config["pools"] = {"green": config["pools"]["green"], "teal": {"endpoints": [await upstream("teal")]}}
        config["routes"] = {"active": "teal", "preview": "green"}
        proxy.path.write_text(yaml.safe_dump(config))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{admin}/api/v1/reload") as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            assert body["routes"] == {"active": "teal", "preview": "green", "generation": 2}
            after = len(colors)
            assert await colors_on_fresh_connections(proxy.ports["active"], 20) == {"teal"}
            await load
            async with session.get(f"{admin}/api/v1/pools") as resp:
                assert {p["name"] for p in (await resp.json())["pools"]} == {"green", "teal"}
        assert failures == []
        assert set(colors[:after]) <= {"blue", "teal"} and "blue" in colors
        # Requests started after the answer may finish on blue only if their head was read before it.
        assert set(colors[after + 16 :]) == {"teal"}
    finally:
        code, out = await proxy.stop()
    assert code == 0, out


async def test_workers_run_the_supervisors_code_wherever_it_was_started(
    upstream: StartUpstream, tmp_path: Path
) -> None:
    """A `proxy/` folder in the working directory (an operator's config folder, say) must not be what the
    workers import: they run the code their supervisor was imported from."""
    shadow = tmp_path / "proxy"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise SystemExit("the shadowing proxy/ folder was imported")\n')
    proxy = ProxyProcess(tmp_path, {"blue": [await upstream("blue")]}, "blue", None)
    started = await Process.start(  # the supervisor comes from this checkout, started from the shadowing folder
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); from bluegreen.cli import main; main()",
         "proxy", "--config", str(proxy.path), "--workers", "2"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        await wait_for_port(proxy.ports["admin"], process=started)
        client = RawClient(proxy.ports["active"])
        assert (await client.request()).status == 200
        await client.close()
    finally:
        code, out = await started.stop()
    assert "shadowing" not in out, out
