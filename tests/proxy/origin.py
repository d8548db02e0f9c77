"""A recording origin for framing tests: it keeps the raw bytes of every upstream connection and parses
them with a real HTTP/1.1 parser (llhttp, as a correct server frames them), so a test sees exactly the
requests an origin would act on, per connection.

Each request is answered by `answer(conn, request)`, which returns the bytes to write (b"" to stay
silent) and whether to close afterwards; the default answers `200` with `METHOD target` as the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def fields(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


@dataclass
class OriginConnection:
    index: int
    raw: bytearray = field(default_factory=bytearray)
    requests: list[Request] = field(default_factory=list)
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)


Answer = Callable[[OriginConnection, Request], tuple[bytes, bool]]


def ok(conn: OriginConnection, req: Request) -> tuple[bytes, bool]:
    body = f"{req.method} {req.target}".encode()
    return b"HTTP/1.1 200 OK\r\nx-conn: %d\r\ncontent-length: %d\r\n\r\n%b" % (conn.index, len(body), body), False


class _Parser:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done: list[Request] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.done.append(Request(method, self.url.decode("latin-1"), self.headers, self.body))
        self.url, self.headers, self.body = b"", [], b""


class RecordingOrigin:
    def __init__(self, answer: Answer = ok) -> None:
        self.answer = answer
        self.connections: list[OriginConnection] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.connected = asyncio.Event()  # set at the first upstream connection
        self.arrived: list[Request] = []

    @property
    def requests(self) -> list[Request]:
        """Every request, in the order they arrived (across connections)."""
        return list(self.arrived)

    @property
    def targets(self) -> list[str]:
        return [req.target for req in self.requests]

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = OriginConnection(len(self.connections))
        self.connections.append(conn)
        self.writers.append(writer)
        self.connected.set()
        parser = _Parser()
        try:
            while data := await reader.read(65536):
                conn.raw += data
                try:
                    parser.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass  # answered like any request below; a real server then reads HTTP again
                except httptools.HttpParserError:
                    writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    break
                for req in parser.done:
                    conn.requests.append(req)
                    self.arrived.append(req)
                    answer, close = self.answer(conn, req)
                    if answer:
                        writer.write(answer)
                    if close:
                        await writer.drain()
                        writer.close()
                        return
                if parser.parser.should_upgrade():
                    parser = _Parser()
                parser.done.clear()
            conn.closed_by_peer.set()
        except ConnectionError:
            conn.closed_by_peer.set()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()
            await self.server.wait_closed()
