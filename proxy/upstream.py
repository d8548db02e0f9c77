"""One pooled HTTP/1.1 connection to an upstream endpoint.

A plain `asyncio.Protocol` with httptools' response parser: no client library in between, so the
proxy decides retries itself (aiohttp's hidden retry on reused connections is exactly what a proxy
must not have). The parser is per connection and survives keep-alive reuse. Response callbacks go
straight to the Exchange bound to the connection, which relays to the client.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.pool import Endpoint


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "endpoint",
        "exchange",
        "headers",
        "idle_since",
        "must_renew_parser",
        "parser",
        "transport",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.idle_since = 0.0
        self.closed = False
        self.must_renew_parser = False  # after a HEAD response the parser still expects a body

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # An idle connection must be silent; anything else means the upstream broke framing.
            self.close()
            return
        if ex.tunnel:
            ex.tunnel_to_client(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.exchange is ex:
                ex.upstream_upgraded(data[exc.args[0] :])
        except httptools.HttpParserError:
            if self.exchange is ex:
                ex.upstream_failed("bad response from upstream")
            else:
                self.close()
            return
        if ex.out:
            ex.flush()

    def eof_received(self) -> bool | None:
        self.closed = True  # at once: an idle connection must not be taken between EOF and connection_lost
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is not None:
            self.exchange = None
            ex.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading(self.exchange.client.P_UPSTREAM)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading(self.exchange.client.P_UPSTREAM)

    # -- parser callbacks (relay to the exchange) --------------------------------------------

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            # No on_status callback: one call less per response; the reason phrase is rebuilt from the
            # code (RFC 9110 §15: clients ignore it), "Unknown" for unregistered codes.
            self.exchange.response_head(self.parser.get_status_code(), b"", self.headers, self.parser)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)
        else:
            self.must_renew_parser = True

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_complete()

    # -- pool side -----------------------------------------------------------------------------

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def renew_parser(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.must_renew_parser = False

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
