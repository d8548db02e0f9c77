"""One pooled HTTP/1.1 connection to an upstream endpoint.

A plain `asyncio.Protocol` with httptools' response parser: no client library in between, so the
proxy decides retries itself (aiohttp's hidden retry on reused connections is exactly what a proxy
must not have). The parser is per connection and survives keep-alive reuse. Response callbacks go
straight to the Exchange bound to the connection, which relays to the client.

The parser validates and frames; the response head itself is taken from the bytes received, whole
(no per-field callback: for nginx's five fields, callbacks, tuples and a loop over them were a large
share of a request's instructions; `python -m loadtest.hotpath --instructions` measures them, and
docs/benchmarks.md has the figures). A head starts at the first byte after the request was sent, or
right after an interim (1xx) head, so its start is always known; it may arrive across several reads,
up to `limits.max_header_bytes` (then the upstream is failed: 502).

A connection goes back to its pool only after the read that completed a response was parsed to its
end with nothing after it: bytes beyond a complete response (an unsolicited second response, a body
after a HEAD answer) close it, so they can never be taken for the answer to another client's request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, cast

import httptools

from proxy.dataplane import fieldscan
from proxy.dataplane.http import HOP_BY_HOP
from proxy.dataplane.outbox import Sender

if TYPE_CHECKING:
    from proxy.dataplane.exchange import Exchange
    from proxy.dataplane.outbox import Outbox
    from proxy.dataplane.pool import Endpoint

# Response fields the proxy acts on, by kind (`Exchange.response_head` acts): `fieldscan.scan` finds them in a
# head with its end, and passes every other field over.
FIELD_COPY: Final = 0
FIELD_DROP: Final = 1
FIELD_LENGTH: Final = 2
FIELD_TE: Final = 3
FIELD_CONNECTION: Final = 4
FIELD_UPGRADE: Final = 5
RESP_FIELDS: Final = {name: FIELD_DROP for name in HOP_BY_HOP} | {
    b"content-length": FIELD_LENGTH,
    b"transfer-encoding": FIELD_TE,
    b"connection": FIELD_CONNECTION,
    b"upgrade": FIELD_UPGRADE,
}
_RESP_SCAN: Final = fieldscan.table(RESP_FIELDS)
_find_fields: Final = fieldscan.scan  # a module static: no lookup of `fieldscan`, then `scan`, per call


class UpstreamConnection(Sender, asyncio.Protocol):
    __slots__ = (
        "closed",
        "endpoint",
        "chunk",
        "exchange",
        "head_at",
        "head_buf",
        "held",
        "idle_since",
        "must_renew_parser",
        "outbox",
        "parser",
        "reuse",
        "transport",
    )

    def __init__(self, endpoint: Endpoint, outbox: Outbox) -> None:
        self.endpoint = endpoint
        self.outbox = outbox
        self.held: list[bytes] = []  # written in this loop iteration, not sent yet (`proxy.dataplane.outbox`)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunk = b""  # the read being parsed
        self.head_at = -1  # where in `chunk` the pending response head starts; -1: none pending
        self.head_buf = b""  # the pending head's bytes from earlier reads
        self.idle_since = 0.0
        self.closed = False
        self.must_renew_parser = False  # after a HEAD response the parser still expects a body
        self.reuse = False  # the response completed in the read being parsed: back to the pool after it

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
        self.chunk = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.exchange is ex:
                ex.upstream_upgraded(data[exc.args[0] :])
        except httptools.HttpParserError:
            self.reuse = False
            if self.exchange is ex:
                ex.response_started = True  # bytes of an answer arrived: nothing is retried (RFC 9110 §9.2.2)
                ex.upstream_failed("bad response from upstream")
            else:
                self.close()  # bytes after a complete response (`on_message_begin`, `on_body`)
            return
        if self.reuse:
            self.reuse = False
            ex.dp.release(self)
            return
        if self.head_at >= 0 and self.exchange is ex:  # a head still incomplete: keep it for the next read
            ex.response_started = True
            self.head_buf += data[self.head_at :]
            self.head_at = 0
            if len(self.head_buf) > ex.dp.max_header_bytes:
                ex.upstream_failed("response head too large")
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

    # Only the callbacks the relay needs: httptools calls only those a protocol has, and each call costs.

    def on_message_begin(self) -> None:
        if self.exchange is None:
            raise ValueError("a response nobody asked for")  # stops the parse: the connection is closed

    def on_headers_complete(self) -> None:
        buf, at = self.chunk, self.head_at
        held = len(self.head_buf)
        if held:  # the head began in an earlier read
            buf, at = self.head_buf + buf, 0
            self.head_buf = b""
        # llhttp accepted the head: CRLF line endings only, so it ends at the first empty line.
        found = _find_fields(buf, at, _RESP_SCAN) if at >= 0 else None
        if found is None:
            raise ValueError("response head not found in the bytes received")  # a bug: fail the exchange
        end = at + found[0]
        status = self.parser.get_status_code()
        # After an interim response the next head follows at once; after a final one none is expected.
        self.head_at = end - held if status < 200 and status != 101 else -1
        if self.exchange is not None:
            self.exchange.response_head(status, buf[at:end], found, self.parser)

    def on_body(self, body: bytes) -> None:
        if self.exchange is None:
            raise ValueError("bytes after a complete response")  # after a HEAD answer: closed, not reused
        self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_complete()

    # -- pool side -----------------------------------------------------------------------------

    def bind(self, exchange: Exchange) -> None:
        """Carry `exchange`'s response: its head starts with the next byte the upstream sends."""
        self.exchange = exchange
        self.head_at = 0
        self.head_buf = b""
        if self.must_renew_parser:
            self.renew_parser()

    def finished(self, reusable: bool) -> None:
        """The bound exchange's response is complete: unbind; reuse once this read is parsed, or close."""
        self.exchange = None
        if reusable:
            self.reuse = True
        else:
            self.close()

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def renew_parser(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.must_renew_parser = False

    def close(self) -> None:
        self.send_held()
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.held.clear()
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
