"""A fleet of three real proxies on a real etcd: flips under load, acknowledgement, a frozen proxy, etcd restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.proxy.conftest import StartUpstream
from tests.proxy.support import EtcdProcess, ProxyProcess, RawClient, child_pids
from tests.support import wait_until

TTL = 2


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    server = await EtcdProcess(tmp_path / "etcd").start()
    yield server
    await server.kill()


async def start_fleet(
    tmp_path: Path, etcd: EtcdProcess, pools: dict[str, list[str]], n: int = 3, **state_extra: Any
) -> list[ProxyProcess]:
    proxies = []
    for i in range(n):
        d = tmp_path / f"p{i}"
        d.mkdir()
        state = {
            "backend": "etcd",
            "endpoints": [etcd.endpoint],
            "prefix": "/bg-test/",
            "lease_ttl": f"{TTL}s",
            "name": f"p{i}",
            **state_extra,
        }
        proxies.append(ProxyProcess(d, pools, "blue", "green", state=state))
    await asyncio.gather(*(p.start() for p in proxies))
    return proxies


def process_tree(proxy: ProxyProcess) -> list[int]:
    """The supervisor and its workers: freezing a proxy means freezing all of them."""
    assert proxy.proc is not None
    return [proxy.proc.pid, *child_pids(proxy.proc.pid)]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


async def stop_all(proxies: list[ProxyProcess]) -> None:
    await asyncio.gather(*(p.stop() for p in proxies if p.proc is not None))


async def fleet_store(session: aiohttp.ClientSession, proxy: ProxyProcess, state: str) -> bool:
    async with session.get(f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/fleet") as r:
        return bool((await r.json())["store"] == state)


async def switch(session: aiohttp.ClientSession, proxy: ProxyProcess, color: str) -> tuple[int, dict[str, Any]]:
    async with session.post(f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/switch", json={"active": color}) as r:
        return r.status, await r.json()


async def load(
    proxies: list[ProxyProcess], stop: float, seen: list[tuple[int, float, float, str]], failures: list[str]
) -> None:
    async def one(i: int, port: int) -> None:
        client = RawClient(port)
        try:
            while time.monotonic() < stop:
                sent = time.monotonic()
                try:
                    resp = await asyncio.wait_for(client.request(), 5)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    failures.append(f"p{i}: {exc!r}")
                    await client.close()
                    continue
                if resp.status != 200:
                    failures.append(f"p{i}: status {resp.status}")
                    continue
                seen.append((i, sent, time.monotonic(), resp.headers[b"x-served-by-color"].decode()))
        finally:
            await client.close()

    await asyncio.gather(*(one(i, p.ports["active"]) for i, p in enumerate(proxies) for _ in range(3)))


async def test_fleet_flips_under_load_every_proxy_acknowledges(
    upstream: StartUpstream, tmp_path: Path, etcd: EtcdProcess
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxies = await start_fleet(tmp_path, etcd, pools)
    try:
        async with aiohttp.ClientSession() as session:
            seen: list[tuple[int, float, float, str]] = []
            failures: list[str] = []
            flips: list[tuple[float, float, str]] = []
            stop = time.monotonic() + 3
            traffic = asyncio.ensure_future(load(proxies, stop, seen, failures))
            color = "green"
            n = 0
            while time.monotonic() < stop - 0.3 and n < 100:
                started = time.monotonic()
                status, body = await switch(session, proxies[n % 3], color)  # any proxy's admin flips the fleet
                assert status == 200, body
                assert body["active"] == color and body["fleet"]["acked"] == ["p0", "p1", "p2"]
                flips.append((started, time.monotonic(), color))
                color = "blue" if color == "green" else "green"
                n += 1
                await asyncio.sleep(0.05)  # paces the flips (about 20/s), it waits for nothing
            await traffic
            async with session.get(f"http://127.0.0.1:{proxies[0].ports['admin']}/api/v1/fleet") as r:
                fleet = await r.json()
        assert failures == []
        assert len(flips) >= 10 and len(seen) > 300
        assert {m["id"] for m in fleet["members"]} == {"p0", "p1", "p2"} and fleet["store"] == "up"
        # Nothing begun after an acknowledged flip was served by the old color, on any proxy.
        for _i, sent, received, got in seen:
            k = max((j for j, f in enumerate(flips) if f[1] <= sent), default=None)
            if k is None:
                continue
            allowed = {flips[k][2]} | (
                {flips[k + 1][2]} if k + 1 < len(flips) and flips[k + 1][0] <= received else set()
            )
            assert got in allowed
    finally:
        await stop_all(proxies)


async def test_frozen_proxy_is_reported_and_never_serves_the_old_color(
    upstream: StartUpstream, tmp_path: Path, etcd: EtcdProcess
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxies = await start_fleet(tmp_path, etcd, pools)
    frozen = proxies[2]
    pids = process_tree(frozen)
    try:
        client = RawClient(frozen.ports["active"])
        assert (await client.request()).headers[b"x-served-by-color"] == b"blue"
        signal_all(pids, signal.SIGSTOP)
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            status, body = await switch(session, proxies[0], "green")
            waited = time.monotonic() - started
        assert status == 200, body
        assert body["fleet"]["dropped"] == ["p2"] and body["fleet"]["acked"] == ["p0", "p1"]
        assert waited < 3 * TTL  # it waited for p2's lease to expire, not forever
        request = asyncio.ensure_future(client.request())  # queued while frozen: answered on wake
        await wait_until(lambda: client.sent == 2, message="the request written to the frozen proxy")
        signal_all(pids, signal.SIGCONT)
        resp = await asyncio.wait_for(request, 10)
        # Fenced (503) or already updated (green): never the old color after the acknowledged flip.
        assert resp.status == 503 or resp.headers[b"x-served-by-color"] == b"green", resp.status

        async def served() -> Any:
            resp = await client.request()
            return resp if resp.status == 200 else None

        resp = await wait_until(served, 10, 0.1, message="the woken proxy rejoining")
        assert resp.headers[b"x-served-by-color"] == b"green"
        await client.close()
    finally:
        signal_all(pids, signal.SIGCONT)
        await stop_all(proxies)


async def test_etcd_restart_traffic_never_stops_and_no_flip_is_missed(
    upstream: StartUpstream, tmp_path: Path, etcd: EtcdProcess
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxies = await start_fleet(tmp_path, etcd, pools)
    try:
        async with aiohttp.ClientSession() as session:
            seen: list[tuple[int, float, float, str]] = []
            failures: list[str] = []
            stop = time.monotonic() + 2.5
            traffic = asyncio.ensure_future(load(proxies, stop, seen, failures))
            await wait_until(lambda: {i for i, *_ in seen} == {0, 1, 2}, message="traffic through every proxy")
            await etcd.kill()
            # Traffic goes on while etcd is down: the proxies see it down (their next lease renewal fails).
            await wait_until(lambda: fleet_store(session, proxies[0], "down"), TTL * 2, message="etcd seen down")
            before = len(seen)
            await wait_until(lambda: len(seen) > before + 30, message="traffic with etcd down")
            status, body = await switch(session, proxies[0], "green")
            assert status == 503 and "etcd" in body["error"]  # refused with a clear error, nothing changed
            await etcd.start()

            async def flipped() -> tuple[int, dict[str, Any]] | None:  # the proxies reconnect on their own
                status, body = await switch(session, proxies[1], "green")
                return (status, body) if status == 200 else None

            status, body = await wait_until(flipped, 10, 0.1, message="a flip once etcd is back")
            assert status == 200 and body["fleet"]["acked"] == ["p0", "p1", "p2"], body
            await traffic
        assert failures == []  # traffic never stopped: the last routes kept serving while etcd was down
        for i in range(3):
            client = RawClient(proxies[i].ports["active"])
            assert (await client.request()).headers[b"x-served-by-color"] == b"green"
            await client.close()
    finally:
        await stop_all(proxies)


async def test_flip_names_the_laggards_after_ack_timeout(
    upstream: StartUpstream, tmp_path: Path, etcd: EtcdProcess
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxies = await start_fleet(tmp_path, etcd, pools, ack_timeout="500ms")
    pids = process_tree(proxies[1])
    try:
        signal_all(pids, signal.SIGSTOP)
        async with aiohttp.ClientSession() as session:
            status, body = await switch(session, proxies[0], "green")
            # Committed, but p1 (lease still valid for TTL) has not served it within the 500 ms asked for.
            assert status == 504 and "p1" in body["error"] and "state version 2" in body["error"]
            async with session.get(f"http://127.0.0.1:{proxies[2].ports['admin']}/api/v1/routes") as r:
                assert (await r.json())["active"] == "green"  # the rest of the fleet serves it
    finally:
        signal_all(pids, signal.SIGCONT)
        await stop_all(proxies)
