"""`--workers N`: one admin, flips acknowledged by every worker, a dead worker restarted on the current state."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.proxy.conftest import StartUpstream
from tests.proxy.support import ProxyProcess, RawClient


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


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
    proxy = ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", "2")
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
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                now = children(proxy.proc.pid)
                if len(now) == 2 and victim not in now:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the killed worker was not restarted")
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
            assert 'bluegreen_requests_total{pool="blue",status_class="2xx"}' in text
    finally:
        code, out = proxy.stop()
    assert code == 0, out
