"""The admin API under abuse: floods, conflicting flips, huge and malformed bodies; the token never leaks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import ProxyProcess, RawClient


async def test_concurrent_conflicting_switches_only_one_wins(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    url = f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/switch"
    async with aiohttp.ClientSession() as session:

        async def flip(i: int) -> int:
            body = {"active": "green" if i % 2 else "blue", "preview": "blue" if i % 2 else "green", "generation": 1}
            async with session.post(url, json=body) as resp:
                return resp.status

        statuses = await asyncio.gather(*(flip(i) for i in range(40)))
    # Generation 1 -> 2 happens exactly once; every later compare-and-swap on generation 1 is stale (a blue
    # request that came before the winner asked for the routes already in place: a 200 that changes nothing).
    routes = await proxy.control.routes()
    assert (routes.active, routes.generation) == ("green", 2)
    assert set(statuses) == {200, 409} and statuses.count(409) >= 19


async def test_flood_of_switches_keeps_serving(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    url = f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/switch"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:

        async def flip(i: int) -> int:
            async with session.post(url, json={"active": "green" if i % 2 else "blue"}) as resp:
                return resp.status

        statuses = await asyncio.gather(*(flip(i) for i in range(400)))
        async with session.post(url, data=b"x" * (1024 * 1024)) as resp:
            assert resp.status == 413 and "larger than" in (await resp.json())["error"]
        async with session.post(url, data=b"\xff\xfe{{", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400 and "invalid JSON" in (await resp.json())["error"]
    assert set(statuses) == {200}
    client = RawClient(proxy.ports["active"])
    try:
        assert (await client.request()).status == 200
    finally:
        await client.close()


async def test_token_never_logged(upstream: StartUpstream, tmp_path: Path) -> None:
    token = "tok-9f8e7d6c5b4a"
    proxy = ProxyProcess(
        tmp_path,
        {"blue": [await upstream("blue")], "green": [await upstream("green")]},
        "blue",
        "green",
        admin={"host": "127.0.0.1", "port": 0, "token": token},
    )
    proxy.path.write_text(proxy.path.read_text().replace("port: 0", f"port: {proxy.ports['admin']}"))
    await proxy.start()
    try:
        base = f"http://127.0.0.1:{proxy.ports['admin']}"
        async with aiohttp.ClientSession() as session:
            for auth in (f"Bearer {token}", f"Bearer {token}x", token, ""):
                async with session.post(
                    f"{base}/api/v1/switch", json={"active": "green"}, headers={"Authorization": auth}
                ):
                    pass
            async with session.get(f"{base}/metrics") as resp:
                assert token not in await resp.text()
    finally:
        code, out = await proxy.stop()
    assert code == 0
    assert token not in out
