"""Upstream faults with real processes: killed mid-request, mid-stream and mid-WebSocket; hung; garbage.

The proxy answers 502/504 where a response cannot be completed, cuts the client where part of it was
already sent, retries only what is safe, ejects the endpoint and keeps serving with the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from proxy.server import ProxyServer
from tests.proxy.conftest import RawUpstream, StartProxy, StartUpstream
from tests.proxy.support import RawClient, UpstreamProcess
from tests.support import wait_until


@pytest.fixture
async def victim() -> AsyncIterator[UpstreamProcess]:
    up = await UpstreamProcess.start("blue")
    yield up
    await up.kill()


async def in_flight_on(proxy: ProxyServer, address: str) -> bool:
    """Whether the proxy has a request in flight on the endpoint `address` (of pool blue)."""
    pool = (await proxy.control.status()).pool("blue")
    return pool is not None and any(e.address == address and e.in_flight for e in pool.endpoints)


async def test_killed_mid_request_get_retried_on_the_rest(
    victim: UpstreamProcess, upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    survivor = await upstream("blue")
    proxy = await start_proxy({"blue": [victim.address, survivor]}, preview=None)
    port = proxy.ports["active"]
    get_client = RawClient(port)
    try:
        # Round robin: the first request goes to the victim, which dies before answering.
        slow_get = asyncio.ensure_future(get_client.request("/slow?ms=2000"))
        await wait_until(lambda: in_flight_on(proxy, victim.address), message="the GET in flight on the victim")
        await victim.kill()
        get_resp = await asyncio.wait_for(slow_get, 10)
        assert get_resp.status == 200  # idempotent, no response byte yet: retried on the survivor
        assert get_resp.headers[b"x-served-by-color"] == b"blue"
        for _ in range(10):  # the dead endpoint is ejected; the pool keeps serving
            assert (await get_client.request("/color")).status == 200
    finally:
        await get_client.close()
    pool = (await proxy.control.status()).pool("blue")
    assert pool is not None and [ep.healthy for ep in pool.endpoints] == [False, True]


async def test_post_on_killed_upstream_is_502_not_replayed(victim: UpstreamProcess, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [victim.address]}, preview=None)
    client = RawClient(proxy.ports["active"])
    try:
        post = asyncio.ensure_future(client.request("/slow?ms=3000", method="POST", body=b"x"))
        await wait_until(lambda: in_flight_on(proxy, victim.address), message="the POST in flight on the victim")
        await victim.kill()
        assert (await asyncio.wait_for(post, 10)).status == 502
    finally:
        await client.close()


async def test_killed_mid_stream_cuts_the_client(victim: UpstreamProcess, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [victim.address]}, preview=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    writer.write(b"GET /stream?chunks=100&ms=50 HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    await reader.readuntil(b"chunk 1\n")
    await victim.kill()
    rest = await asyncio.wait_for(reader.read(), 5)  # the proxy closes: no terminating 0-chunk
    assert not rest.endswith(b"0\r\n\r\n")
    writer.close()


async def test_killed_mid_websocket_closes_the_client(victim: UpstreamProcess, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [victim.address]}, preview=None)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"http://127.0.0.1:{proxy.ports['active']}/ws") as ws:
            await ws.send_str("a")
            assert await ws.receive_str() == "blue:a"
            await victim.kill()
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    status = await proxy.control.status()
    assert status.pool("blue").in_flight == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("answer", "then", "expected"),
    [
        (b"garbage, not HTTP\r\n\r\n", "close", 502),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "close", 502),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "close", 502),
        (b"", "hang", 504),
    ],
    ids=["garbage", "duplicate-length", "length-and-chunked", "hangs-before-head"],
)
async def test_bad_upstream_answers(
    answer: bytes, then: str, expected: int, start_proxy: StartProxy, raw_upstream: Callable[..., RawUpstream]
) -> None:
    up = raw_upstream(answer, then)
    proxy = await start_proxy(
        {"blue": [await up.start()]}, preview=None, timeouts={"upstream_header": "300ms"}, retries=0
    )
    client = RawClient(proxy.ports["active"])
    try:
        assert (await asyncio.wait_for(client.request(), 5)).status == expected
    finally:
        await client.close()


async def test_hangs_after_headers_is_cut_at_idle_timeout(
    start_proxy: StartProxy, raw_upstream: Callable[..., RawUpstream]
) -> None:
    up = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", "hang")
    proxy = await start_proxy({"blue": [await up.start()]}, preview=None, timeouts={"idle": "300ms"})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)  # closed by the proxy after 300 ms of silence
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"partial")
    writer.close()
