"""Slow clients are bounded by timeouts and never block others; limits shed with clear answers."""

from __future__ import annotations

import asyncio

from tests.proxy.conftest import StartProxy, StartUpstream, raw_request
from tests.proxy.support import RawClient
from tests.support import wait_until


async def test_slowloris_gets_408_and_others_are_served(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, timeouts={"client_header": "400ms"})
    port = proxy.ports["active"]
    slow = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        slow.append((reader, writer))
    client = RawClient(port)
    try:
        for _ in range(5):
            assert (await client.request()).status == 200  # served while 20 heads trickle
        for _, writer in slow:
            writer.write(b"a")
        answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 3) for r, _ in slow))
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
    finally:
        await client.close()
        for _, writer in slow:
            writer.close()


async def test_slow_upload_is_cut_at_idle_timeout(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(
        {"blue": [await upstream("blue")]}, preview=None, timeouts={"idle": "300ms", "upstream_header": "300ms"}
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data == b"" or data.startswith(b"HTTP/1.1 504")
    writer.close()


async def test_idle_keepalive_connections_are_closed(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, timeouts={"keepalive": "300ms"})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await reader.readuntil(b'"blue"')
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed quietly after 300 ms idle
    writer.close()


async def test_body_limit_413(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, limits={"max_body_bytes": 1000})
    port = proxy.ports["active"]
    data = await raw_request(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n" + b"x" * 1001)
    assert data.startswith(b"HTTP/1.1 413")
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n"
    )
    data = await raw_request(port, chunked * 1 + b"400\r\n" + b"z" * 1024 + b"\r\n0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 413") or data == b""
    ok = await raw_request(port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert ok.startswith(b"HTTP/1.1 200")


async def test_connection_limit_sheds_with_503(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, limits={"max_connections": 3})
    port = proxy.ports["active"]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    dp = proxy.dataplane
    assert dp is not None
    await wait_until(lambda: len(dp.clients) == 3, message="3 client connections accepted")
    data = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 503")
    for _, writer in held:
        writer.close()
    await wait_until(lambda: not dp.clients, message="the held connections closed")
    assert (await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )


async def test_per_endpoint_concurrency_limit_sheds(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(
        {"blue": [await upstream("blue")]}, preview=None, limits={"max_in_flight_per_endpoint": 2}
    )
    clients = [RawClient(proxy.ports["active"]) for _ in range(4)]
    try:
        results = await asyncio.gather(*(c.request("/slow?ms=300") for c in clients))
        statuses = sorted(r.status for r in results)
        assert statuses == [200, 200, 503, 503]
    finally:
        for c in clients:
            await c.close()


def head_of(size: int) -> bytes:
    """A GET head of exactly `size` bytes as the limit counts them (request target, fields, separators)."""
    base = b"GET / HTTP/1.1\r\nHost: a\r\n"
    fields = []
    left = size - len(b"/") - len(b"Host") - len(b"a") - 4
    while left > 0:
        value = b"v" * max(1, min(100, left - len(b"X-Fill") - 4))
        fields.append(b"X-Fill: " + value + b"\r\n")
        left -= len(b"X-Fill") + len(value) + 4
    return base + b"".join(fields) + b"\r\n"


async def test_header_size_limit(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    """`limits.max_header_bytes` holds for a head sent at once (checked when it completes) and for one that
    trickles in (checked per read, before it completes); a head at the limit passes."""
    limit = 2048
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, limits={"max_header_bytes": limit})
    port = proxy.ports["active"]
    at_limit = await raw_request(port, head_of(limit)[:-2] + b"Connection: close\r\n\r\n")
    assert at_limit.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")  # the Connection field counts too
    assert (await raw_request(port, head_of(limit - 40)[:-2] + b"Connection: close\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )
    many_fields = await raw_request(port, head_of(limit + 200))
    assert many_fields.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")

    # In pieces: rejected once the bytes read exceed the limit, though the head never ends.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = head_of(limit * 3)[:-4]  # no final CRLF CRLF
        for i in range(0, len(head), 500):
            writer.write(head[i : i + 500])
            await writer.drain()
            await asyncio.sleep(0.01)  # trickles the head in pieces on purpose
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")


async def test_early_answer_reaches_a_client_still_uploading(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    """A 413 sent while the client is still uploading is read by the client: the proxy shuts its side and
    drains the rest (lingering close) instead of closing with unread input, which would reset the
    connection and could destroy the answer."""
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, limits={"max_body_bytes": 1000})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    body = 4 * 1024 * 1024
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % body)
        sent = 0
        chunk = b"x" * 65536
        while sent < body:
            writer.write(chunk)
            await writer.drain()  # raises if the proxy reset the connection
            sent += len(chunk)
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
