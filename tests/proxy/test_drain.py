"""Drain: work begun before a flip finishes on its pool, intact; new work goes to the new pool."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from proxy.server import ProxyServer
from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import RawClient
from tests.support import wait_until


async def in_flight(proxy: ProxyServer, pool: str) -> int:
    status = (await proxy.control.status()).pool(pool)
    return status.in_flight if status is not None else 0


async def pools(upstream: StartUpstream) -> dict[str, list[str]]:
    return {"blue": [await upstream("blue")], "green": [await upstream("green")]}


async def test_slow_request_and_stream_finish_on_old_pool(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(await pools(upstream))
    base = f"http://127.0.0.1:{proxy.ports['active']}"
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{base}/slow?ms=400"))
        async with session.get(f"{base}/stream?chunks=8&ms=40") as stream:
            first = await stream.content.readline()
            assert first == b"blue chunk 0\n"
            await proxy.control.switch("green")
            async with session.get(f"{base}/color") as fresh:
                assert await fresh.json() == "green"
            rest = await stream.read()
        assert rest == b"".join(b"blue chunk %d\n" % i for i in range(1, 8))
        resp = await slow
        assert resp.status == 200 and await resp.json() == "blue"
        assert resp.headers["x-served-by-color"] == "blue"
        resp.release()


async def test_websocket_opened_before_flip_stays(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(await pools(upstream))
    url = f"http://127.0.0.1:{proxy.ports['active']}/ws"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as old:
            await old.send_str("a")
            assert await old.receive_str() == "blue:a"
            await proxy.control.switch("green")
            async with session.ws_connect(url) as new:
                await new.send_str("b")
                assert await new.receive_str() == "green:b"
            await old.send_str("c")
            assert await old.receive_str() == "blue:c"
            status = await proxy.control.status()
            assert status.pool("blue").in_flight == 1  # type: ignore[union-attr]


async def test_keep_alive_connection_survives_flip(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(await pools(upstream))
    client = RawClient(proxy.ports["active"])
    try:
        assert (await client.request()).body == b'"blue"'
        await proxy.control.switch("green")
        assert (await client.request()).body == b'"green"'  # same connection, next request, new pool
        await proxy.control.switch("blue")
        assert (await client.request()).body == b'"blue"'
    finally:
        await client.close()


async def test_unrouted_pool_drains_and_reports(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    p = await pools(upstream)
    p["yellow"] = [await upstream("yellow")]
    proxy = await start_proxy(p)
    base = f"http://127.0.0.1:{proxy.ports['preview']}"
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(f"{base}/slow?ms=300"))
        await wait_until(lambda: in_flight(proxy, "green"), message="the slow request in flight on green")
        await proxy.control.switch("blue", "yellow")  # green is named by no route now: it drains
        green = (await proxy.control.status()).pool("green")
        assert green is not None and green.draining and green.in_flight == 1
        async with session.get(f"{base}/color") as fresh:
            assert await fresh.json() == "yellow"
        resp = await slow
        assert await resp.json() == "green"
        resp.release()
    green = (await proxy.control.status()).pool("green")
    assert green is not None and not green.draining and green.in_flight == 0


async def test_drain_deadline_cuts_what_is_left(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    p = await pools(upstream)
    p["yellow"] = [await upstream("yellow")]
    proxy = await start_proxy(p, drain={"timeout": "200ms"})
    client = RawClient(proxy.ports["preview"])  # no hidden retry: aiohttp would re-send the GET on yellow
    try:
        slow = asyncio.ensure_future(client.request("/slow?ms=5000"))
        await wait_until(lambda: in_flight(proxy, "green"), message="the slow request in flight on green")
        await proxy.control.switch("blue", "yellow")
        async with asyncio.timeout(3):
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await slow
    finally:
        await client.close()
    green = (await proxy.control.status()).pool("green")
    assert green is not None and green.in_flight == 0 and not green.draining
