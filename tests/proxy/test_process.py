"""The real command: SIGTERM with requests in flight, and the CLI's `status` and `switch`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import REPO, ProxyProcess, RawClient
from tests.support import wait_until


def cli(*args: str, admin: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluegreen", *args, "--admin", f"http://127.0.0.1:{admin}"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "BLUEGREEN_ADMIN_TOKEN"},
    )


async def in_flight(admin: int) -> bool:
    """Whether the proxy behind `admin` has a request in flight (its admin API says so)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin}/api/v1/pools") as resp:
            return any(p["in_flight"] for p in (await resp.json())["pools"])


async def test_sigterm_finishes_in_flight_then_exits_0(upstream: StartUpstream, tmp_path: Path) -> None:
    proxy = await ProxyProcess(tmp_path, {"blue": [await upstream("blue")]}, "blue", None).start()
    client, idle = RawClient(proxy.ports["active"]), RawClient(proxy.ports["active"])
    try:
        assert (await idle.request()).status == 200  # an idle keep-alive connection: closed a second into the stop
        slow = asyncio.ensure_future(client.request("/slow?ms=700"))
        await wait_until(lambda: in_flight(proxy.ports["admin"]), message="the slow request in flight")
        stopping = asyncio.ensure_future(proxy.stop())
        assert idle.reader is not None
        await asyncio.wait_for(idle.reader.read(), 5)  # the proxy is stopping: it closed the idle connection
        resp = await slow
        assert resp.status == 200 and resp.body == b'"blue"'
        assert resp.headers[b"connection"] == b"close"
        code, out = await stopping
    finally:
        await client.close()
        await idle.close()
    assert code == 0, out
    assert "stopping" in out and "Traceback" not in out


async def test_a_graceful_stop_gives_idle_connections_a_second_for_their_next_request(
    upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    """However long a keep-alive connection was idle before the stop, it has a second from the stop to send its
    next request, which is answered (with `Connection: close`): a client is never cut as it sends after a
    pause. A connection that sends nothing is closed once that second is up, so the stop ends soon."""
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None)
    late, silent = RawClient(proxy.ports["active"]), RawClient(proxy.ports["active"])
    try:
        assert (await late.request()).status == 200
        assert (await silent.request()).status == 200
        await asyncio.sleep(1.2)  # idle for longer than the grace before the stop begins
        began = asyncio.get_running_loop().time()
        stopping = asyncio.ensure_future(proxy.stop(grace=10))
        await asyncio.sleep(0.5)
        resp = await late.request()
        assert resp.status == 200 and resp.headers[b"connection"] == b"close"
        assert silent.reader is not None
        assert await asyncio.wait_for(silent.reader.read(), 5) == b""
        closed = asyncio.get_running_loop().time() - began
        assert 0.9 <= closed < 3, closed  # a second into the stop (plus the sweep's tick), not at once
        await asyncio.wait_for(stopping, 5)
    finally:
        await late.close()
        await silent.close()


async def test_status_and_switch_commands(upstream: StartUpstream, tmp_path: Path) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start()
    admin = proxy.ports["admin"]
    try:
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(None, lambda: cli("status", admin=admin))
        assert out.returncode == 0 and "active -> blue, preview -> green" in out.stdout
        out = await loop.run_in_executor(None, lambda: cli("switch", "green", admin=admin))
        assert out.returncode == 0 and "generation 2: active -> green, preview -> blue" in out.stdout
        out = await loop.run_in_executor(None, lambda: cli("switch", "purple", admin=admin))
        assert out.returncode == 1 and out.stderr.startswith("bluegreen: 404") and "Traceback" not in out.stderr
        client = RawClient(proxy.ports["active"])
        assert (await client.request()).body == b'"green"'
        await client.close()
    finally:
        code, output = await proxy.stop()
    assert code == 0, output
    down = await asyncio.get_running_loop().run_in_executor(None, lambda: cli("status", admin=admin))
    assert down.returncode == 1 and "cannot reach the admin API" in down.stderr
