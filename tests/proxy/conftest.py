"""Fixtures: real upstream servers and a real proxy on loopback ports (port 0, no collisions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from proxy.config import parse_config
from proxy.server import ProxyServer
from tests.proxy.upstream_app import make_app

StartUpstream = Callable[[str], Awaitable[str]]
StartProxy = Callable[..., Awaitable[ProxyServer]]


@pytest.fixture
async def upstream() -> AsyncIterator[StartUpstream]:
    """Start an upstream app named `name` on 127.0.0.1; returns its `host:port`."""
    runners: list[web.AppRunner] = []

    async def start(name: str) -> str:
        runner = web.AppRunner(make_app(name), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def proxy_config(pools: dict[str, list[str]], active: str, preview: str | None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listeners": {"active": {"host": "127.0.0.1", "port": 0}, "preview": {"host": "127.0.0.1", "port": 0}},
        "admin": {"host": "127.0.0.1", "port": 0},
        "pools": {name: {"endpoints": eps} for name, eps in pools.items()},
        "routes": {"active": active, "preview": preview},
    }
    data.update(extra)
    return data


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    servers: list[ProxyServer] = []

    async def start(
        pools: dict[str, list[str]], active: str = "blue", preview: str | None = "green", **extra: Any
    ) -> ProxyServer:
        server = ProxyServer(parse_config(proxy_config(pools, active, preview, **extra), "<test>"))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace=1.0)


class RawUpstream:
    """A raw TCP upstream, for what a real server would not do: it records every byte it receives and the
    method of each request head, and per head writes `answer`, then `then`s: "keep" reading, "close",
    "hang" (silent, connection open) or "reset" (abort before answering anything)."""

    OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def __init__(self, answer: bytes = OK, then: str = "keep") -> None:
        self.answer, self.then = answer, then
        self.received = b""
        self.methods: list[str] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        buffer = b""
        try:
            while data := await reader.read(65536):
                self.received += data
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    self.methods.append(head.split(b" ", 1)[0].decode(errors="replace"))
                    if self.then == "reset":
                        writer.transport.abort()
                        return
                    writer.write(self.answer)
                    if self.then == "close":
                        writer.close()
                        return
                    if self.then == "hang":
                        await asyncio.sleep(30)
                        return
        except ConnectionError:
            pass
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()
            await self.server.wait_closed()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., RawUpstream]]:
    """Make RawUpstreams (started by the test with `await up.start()`); all are closed afterwards."""
    made: list[RawUpstream] = []

    def make(answer: bytes = RawUpstream.OK, then: str = "keep") -> RawUpstream:
        up = RawUpstream(answer, then)
        made.append(up)
        return up

    yield make
    for up in made:
        await up.close()


async def raw_request(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes, read until the proxy closes (or `wait` seconds): for inputs a client library would fix."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(wait):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 responses (Content-Length or chunked framing)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if status < 200 or status in (204, 304):
            body, data = b"", rest
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").endswith("chunked"):
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2 :]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, headers, body))
    return out
