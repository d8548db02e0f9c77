"""Bodies stream with backpressure: a slow side stalls the other side instead of filling the proxy's memory."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.proxy.conftest import StartProxy, StartUpstream
from tests.support import wait_until

MIB = 1024 * 1024


async def test_slow_reader_pauses_the_upstream(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    blue = await upstream("blue")
    proxy = await start_proxy({"blue": [blue]}, preview=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"], limit=65536)
    writer.write(b"GET /firehose?mb=64 HTTP/1.1\r\nHost: a\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(256 * 1024)  # then stop reading
    async with aiohttp.ClientSession() as session:

        async def progress() -> int:
            async with session.get(f"http://{blue}/progress") as resp:
                return int((await resp.json()).get("firehose", 0))

        readings = [await progress()]

        async def stalled() -> bool:  # the upstream sent nothing more for 3 readings 0.1 s apart
            readings.append(await progress())
            return len(readings) > 3 and len(set(readings[-4:])) == 1

        await wait_until(stalled, 10, 0.1, message="the upstream stalled")
        sent = readings[-1]
    # Socket buffers on both hops hold a few MiB at most; without backpressure all 64 MiB would be sent.
    assert sent < 24 * MIB, sent
    got = 256 * 1024
    while got < 64 * MIB:
        got += len(await reader.read(4 * MIB))
    assert got == 64 * MIB
    writer.close()


async def test_slow_upstream_pauses_the_uploader(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
    total = 256 * MIB
    writer.write(b"POST /sink?ms=2500 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
    block = b"u" * MIB
    pushed = 0
    try:
        async with asyncio.timeout(1.0):
            while pushed < total:
                writer.write(block)
                await writer.drain()
                pushed += MIB
    except TimeoutError:
        pass
    assert pushed < 64 * MIB, pushed  # the proxy stopped reading: it did not buffer the upload
    writer.transport.abort()
