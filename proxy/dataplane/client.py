"""The client side: one `asyncio.Protocol` per accepted connection, parsing with httptools (llhttp).

State is grouped by lifetime (uvicorn's httptools protocol): per listener (the DataPlane and the
role), per connection (transport, parser, queue), per request (the head being parsed). Parser
callbacks only collect; `on_headers_complete` reads the RouteTable snapshot once and builds the
Exchange. Exchanges are started after `feed_data` returns, so a request that the parser rejects
later in the same head never reaches an upstream.

llhttp already refuses the framing attacks of RFC 9112 §6 (CL with TE, duplicate or invalid CL,
`chunked` not last, whitespace before a colon, obs-fold, bare CR). This module adds what it lets
through: a missing or repeated Host in HTTP/1.1, TE in HTTP/1.0, a transfer coding other than
`chunked` (501), oversized head and trailer sections, CONNECT; it rewrites an absolute-form target
to origin-form with the target's authority as Host (RFC 9112 §3.2.2), drops request trailers with
their message, and forwards the body of an Upgrade request that has one as a body (the upgrade is
ignored, as RFC 9110 §7.8 allows: llhttp would take such a body for tunnel data).
"""

from __future__ import annotations

import asyncio
import fcntl
import re
import struct
import termios
from typing import TYPE_CHECKING, Final, cast

import httptools

from proxy.dataplane import fieldscan
from proxy.dataplane.accesslog import LoggedExchange
from proxy.dataplane.exchange import Exchange
from proxy.dataplane.http import (
    HOP_BY_HOP,
    RESPONSE_400,
    RESPONSE_404_HOST,
    RESPONSE_405_CONNECT,
    RESPONSE_408,
    RESPONSE_413,
    RESPONSE_421,
    RESPONSE_431,
    RESPONSE_501_CODING,
    RESPONSE_505,
    VIA,
    connection_fields,
    drop_fields,
)
from proxy.dataplane.outbox import Outbox, Sender

if TYPE_CHECKING:
    from proxy.dataplane.plane import DataPlane
    from proxy.dataplane.routes import App, HostMap

# Request fields the proxy acts on, by kind; every other field is copied as it came.
# Final: mypyc inlines the ints and reads the other constants from C statics, not the module's dict (per use).
_COPY: Final = 0
_DROP: Final = 1
_HOST: Final = 2
_LENGTH: Final = 3
_TE: Final = 4
_CONNECTION: Final = 5
_UPGRADE: Final = 6
_EXPECT: Final = 7
_XFF: Final = 8
_XFH: Final = 9
_XFP: Final = 10
_VIA: Final = 11
_FORWARDED_FIELD: Final = 12
_REQUEST_ID: Final = 13
_REQ_FIELDS: Final = {name: _DROP for name in HOP_BY_HOP} | {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TE,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"x-forwarded-host": _XFH,
    b"x-forwarded-proto": _XFP,
    b"via": _VIA,
    b"forwarded": _FORWARDED_FIELD,
    b"x-request-id": _REQUEST_ID,
}
_REQ_FIRST: Final = frozenset(name[0] for name in _REQ_FIELDS)
# The same names as `fieldscan.scan` reads them, for `_scan`: a field whose name is none of them is copied unread.
_REQ_SCAN: Final = fieldscan.table(_REQ_FIELDS)
_find_fields: Final = fieldscan.scan  # a module static: no lookup of `fieldscan`, then `scan`, per call
_CONNECTION_PLAIN: Final = frozenset({b"keep-alive", b"close"})


IDLE_GRACE: Final = 1.0  # at a graceful stop, an idle keep-alive connection has this long to send its next request (s)
LINGER: Final = 2.0  # seconds a client that was answered early may go on sending before the connection closes
_HOST_NAME: Final = frozenset({b"host"})
_EXPECT_NAME: Final = frozenset({b"expect"})
# RFC 9110 §7.2 / RFC 3986 §3.2.2: an IP literal or a reg-name (unreserved, pct-encoded, sub-delims except
# the comma, which would make a list), then an optional port of digits.
_HOST_VALUE: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9\-._~!$&'()*+;=])+)(?::[0-9]*)?")


# A head `_scan` found plain: method, target, version (`HTTP/1.1`), its field lines as forwarded, Host value,
# Host fields, size (as `limits.max_header_bytes` counts it: the target and the field lines as they came), and
# its body's Content-Length (0: none).
Plan = tuple[bytes, bytes, bytes, bytes, "bytes | None", int, int, int]
_LENGTH_DIGITS: Final = 15  # a longer Content-Length goes to the field-by-field parser (llhttp caps it too)


def _scan(head: bytes, found: list[int]) -> Plan | None:
    """The plan of a complete head (request line, field lines, empty line) that needs nothing but copying, or
    None. `found`: `fieldscan.scan`'s answer for it (where its lines end, and its fields in `_REQ_FIELDS`).

    Such a head has an origin-form target, no field the proxy acts on but Host (kept), a
    `Connection: keep-alive|close` (dropped) and one `Content-Length` written as a plain number (kept: its body
    is forwarded as it is); everything else (a chunked body, hop-by-hop, forwarding, Expect or Upgrade
    fields, two Connection fields, odd spacing) goes to the field-by-field parser. It runs before llhttp
    has seen the head, so it only chooses: `_FastHead` then has llhttp check the same bytes (a field line
    llhttp accepts is exactly `name ":" OWS value OWS`), and a head it refuses is refused as always.

    Only the fields `fieldscan` found are read, by offset (under mypyc an index or a slice is a C operation; a
    bytes method call is a generic one, ~10 times slower)."""
    first = found[1]
    request = head[:first].split(b" ")
    if len(request) != 3:
        return None  # not one space each side of the target: llhttp may read it otherwise
    url = request[1]
    if not url or url[0] != 47:
        return None  # not origin-form ("/...")
    fields = head[first + 2 : -2]  # "name: value" CRLF, per field
    size = len(url) + len(fields)
    host: bytes | None = None
    hosts = 0
    length = -1
    cut = -1
    cut_end = 0
    for index in range(2, len(found), 4):
        kind = found[index]
        start = found[index + 2]
        end = found[index + 3]
        while start < end and (head[start] == 32 or head[start] == 9):
            start += 1  # the value as llhttp hands it over: without leading OWS, trailing OWS kept
        if kind == _HOST:
            hosts += 1
            host = head[start:end]
        elif kind == _CONNECTION and cut < 0 and _plain_connection(head, start, end):
            cut = found[index + 1] - first - 2  # the line and its CRLF, in `fields`
            cut_end = end - first
        elif kind == _LENGTH and length < 0 and 0 < end - start <= _LENGTH_DIGITS:
            # Digits only, no leading zero (`_request` rewrites those), no trailing space: forwarded as it came.
            if head[start] == 48 and end - start > 1:
                return None
            length = 0
            while start < end:
                digit = head[start] - 48
                if not 0 <= digit <= 9:
                    return None
                length = length * 10 + digit
                start += 1
        else:
            return None
    if cut >= 0:
        fields = fields[:cut] + fields[cut_end:]
    return request[0], url, request[2], fields, host, hosts, size, length if length > 0 else 0


def _plain_connection(head: bytes, start: int, end: int) -> bool:
    """Whether `head[start:end]` is `keep-alive` or `close`, in any case: one slice and whole-value compares (C
    under mypyc), `lower` and a set lookup (generic calls) only for other spellings."""
    value = head[start:end]
    if value == b"keep-alive" or value == b"close":
        return True
    return value.lower() in _CONNECTION_PLAIN


class _FastHead:
    """Parser callbacks for heads `_scan` split: llhttp checks them, with no callback per field."""

    __slots__ = ("conn",)

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def on_headers_complete(self) -> None:
        self.conn.on_fast_head()

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        self.conn.on_message_complete()


class _Reject(Exception):
    """Raised from a parser callback to stop parsing; the connection answers `response` and closes
    (None: it reads no more, and closes once what is queued was answered)."""

    def __init__(self, response: bytes | None) -> None:
        self.response = response


def _origin_form(target: bytes) -> tuple[bytes, bytes]:
    """Split an absolute-form target (`http://authority/path?query`) into origin-form and authority.

    RFC 9112 §3.2.2: the target's authority replaces the Host field; the upstream gets one authority only.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise _Reject(RESPONSE_400)
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    authority, path = rest[:end], rest[end:]
    if not authority or b"@" in authority:  # RFC 9110 §4.2.4: userinfo is refused
        raise _Reject(RESPONSE_400)
    if not path.startswith(b"/"):
        path = b"/" + path
    return path, authority


class _BodyAfterUpgrade:
    """Parser callbacks for the body of an Upgrade request that has one.

    llhttp stops at the end of such a head and hands the body over as tunnel data; the proxy ignores the
    upgrade instead, so a fresh parser, primed with a head of the same framing, reads the body as a body.
    After it the connection reads nothing more: it closes once the answer is sent.
    """

    __slots__ = ("conn", "primed")

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.primed = False

    def on_headers_complete(self) -> None:
        self.primed = True

    def on_body(self, body: bytes) -> None:
        self.conn.on_body(body)

    def on_message_complete(self) -> None:
        if self.primed:
            self.conn.on_message_complete()
            raise _Reject(None)


class ClientConnection(Sender, asyncio.Protocol):
    # Why reading is paused, as bits: it resumes only when no reason is left.
    P_PIPELINE = 1  # a pipelined request waits behind the one in progress
    P_UPSTREAM = 2  # the upstream's write buffer is full (request body backpressure)
    P_BUFFER = 4  # request body buffered while connecting upstream
    P_UPGRADE = 8  # waiting for the upstream's answer to an upgrade request
    P_REJECT = 16  # a rejected request: read no more

    __slots__ = (
        "app",
        "app_host",
        "app_map",
        "closed",
        "closing",
        "deadline",
        "dp",
        "fast",
        "fast_off",
        "half_closed",
        "head_size",
        "headers",
        "held",
        "http11",
        "in_head",
        "last_host",
        "lingering",
        "listener",
        "outbox",
        "parser",
        "parsing",
        "paused",
        "peer",
        "plan",
        "proto_via",
        "queue",
        "reject",
        "role",
        "served",
        "sni",
        "transport",
        "trusted",
        "tunnel",
        "upgrade_body",
        "url",
        "write_paused",
        "xff_line",
    )

    def __init__(self, dp: DataPlane, role: str) -> None:
        # Per listener.
        self.dp = dp
        self.role = role
        self.listener = 0 if role == "active" else 1  # its index in a pool's counters
        self.proto_via = dp.proto_via[role]  # X-Forwarded-Proto (http or https) and Via, built once
        self.outbox: Outbox = dp.outbox
        # Per connection.
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []  # written in this loop iteration, not sent yet (`proxy.dataplane.outbox`)
        # Two parsers, each made on first use (a connection that only sends plain heads holds one: ~0.8 KiB):
        self.parser: httptools.HttpRequestParser | None = None  # field by field (`on_header`)
        self.fast: httptools.HttpRequestParser | None = None  # heads `_scan` split (`_FastHead`)
        self.plan: Plan | None = None
        self.fast_off = False  # every byte to `parser` from now on (see `_fast_heads`)
        self.peer = b""
        self.xff_line = b""
        self.trusted = False
        # Requests read, oldest first: a list, not a deque (under mypyc its append and pop are C calls; it holds
        # one or two but for pipelining, whose reading pauses once a second request is queued).
        self.queue: list[Exchange] = []
        self.paused = 0
        self.write_paused = False
        self.closed = False
        self.closing = False  # close after the current response
        self.half_closed = False  # the client sent FIN: close once the queue is empty
        self.reject: bytes | None = None
        self.tunnel: Exchange | None = None
        self.deadline = 0.0
        self.http11 = True
        self.lingering = False
        self.last_host: bytes | None = None  # the last Host value found valid on this connection
        # The application the last Host named, from which HostMap (a keep-alive connection resolves once).
        self.app: App | None = None
        self.app_host: bytes | None = None
        self.app_map: HostMap | None = None
        self.sni: bytes | None = None  # the TLS server name the client asked for (`proxy.dataplane.tls`)
        self.served = False  # a response was sent and the connection waits for its next request
        self.upgrade_body = -2  # an Upgrade request with a body being parsed: its length (-1: chunked)
        # Per request (the head being parsed).
        self.in_head = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.parsing: Exchange | None = None

    # -- transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        dp = self.dp
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        self.peer = ip.encode()
        self.xff_line = b"x-forwarded-for: " + self.peer + b"\r\n"
        self.trusted = dp.is_trusted(ip)
        if dp.tls and self.role in dp.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            name = getattr(ssl_object, "sni_name", None) if ssl_object is not None else None
            self.sni = name.encode() if name else None
        self.deadline = dp.now + dp.header_timeout
        dp.clients.add(self)
        if len(dp.clients) > dp.limits.max_connections:
            self.closing = True
            self.write(dp.overloaded_response)
            self.close()
        elif dp.shutting_down:
            self.closing = True  # accepted as the listeners closed: its one request is answered (Connection: close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        dp = self.dp
        dp.clients.discard(self)
        if dp.shutting_down and not dp.clients:
            dp.all_closed.set()
        while self.queue:
            self.queue[0].abort()  # exchange_finished pops it

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_to_upstream(data)
            return
        if self.paused & self.P_REJECT:
            return
        queue = self.queue
        was_idle = not queue
        if not self.in_head and self.parsing is None:
            # A new head starts (instead of an on_message_begin callback, which costs more than this):
            # the header timeout runs unless a response is still due, and a stall now gets a 408.
            self.in_head = True
            if was_idle:
                self.deadline = self.dp.now + self.dp.header_timeout
            if 65 <= data[0] & 0xDF <= 90 and not self.fast_off:  # a letter: a method, not an empty line
                data = self._fast_heads(data)
                if not data:
                    if was_idle and queue and not queue[0].started:
                        queue[0].start()
                    return
                self.in_head = not self.paused & self.P_REJECT  # what is left starts a head, if read at all
                if not self.in_head:
                    return
        body = self.parsing  # a request body under way
        seen = body.request_bytes if body is not None else 0
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
        if self._feed(parser, data, data):
            if self.in_head:  # this read ended inside a head
                self.head_size += len(data)
                if self.head_size > self.dp.max_header_bytes:
                    self._reject(RESPONSE_431)
            elif body is not None and self.parsing is body:
                # Still inside a chunked body: a read that carried none of it was chunk framing, extensions or
                # trailers, which are bounded like a head (llhttp buffers none of it, but would parse forever).
                if body.request_bytes == seen:
                    self.head_size += len(data)
                    if self.head_size > self.dp.max_header_bytes:
                        self._reject(RESPONSE_431)
                else:
                    self.head_size = 0
        if was_idle and queue and not queue[0].started:
            queue[0].start()

    def _feed(self, parser: httptools.HttpRequestParser, data: bytes, rest: bytes) -> bool:
        """Parse `data` (`rest`: it and what follows it in this read); False when the parse stopped: a
        refused request, a malformed one, an upgrade (the bytes after its head are the tunnel's)."""
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(rest[exc.args[0] :])
        except _Reject as exc:
            self._reject(exc.response)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            self._reject(cause.response if isinstance(cause, _Reject) else RESPONSE_400)
        except httptools.HttpParserError:
            self._reject(RESPONSE_400)
        else:
            return True
        return False

    def _fast_heads(self, data: bytes) -> bytes:
        """Serve the complete messages at the start of `data` whose heads need nothing but copying (`_scan`):
        llhttp checks each one with no callback per field, and its field lines are forwarded in one piece.
        Returns what is left for the field-by-field parser (from the first message that is incomplete or
        needs more: a chunked body or one not all in `data`, hop-by-hop or forwarding fields, an
        absolute-form target...), b"" when nothing is."""
        n = len(data)
        pos = 0
        while True:
            found = _find_fields(data, pos, _REQ_SCAN)
            if found is None:
                return data[pos:] if pos else data
            end = pos + found[0]
            head = data[pos:end] if pos or end != n else data
            plan = _scan(head, found)
            if plan is None:
                return data[pos:] if pos else data
            stop = end + plan[7]  # the end of its body (Content-Length)
            if stop > n:
                return data[pos:] if pos else data  # the body goes on in later reads: the other parser follows it
            self.plan = plan
            fast = self.fast
            if fast is None:
                fast = self.fast = httptools.HttpRequestParser(_FastHead(self))
            rest = data[pos:] if pos else data
            message = head if stop == end else data[pos:stop] if pos or stop != n else data
            if not self._feed(fast, message, rest):
                return b""
            pos = stop
            if self.paused & self.P_REJECT:
                return b""
            if self.fast_off:  # that message closes the connection (`_fast_request`)
                return data[pos:]
            if pos == n:
                return b""
            if not 65 <= data[pos] & 0xDF <= 90:
                return data[pos:]

    def eof_received(self) -> bool | None:
        ex = self.parsing
        if ex is not None:
            # The client ended its side inside a request body: that request can never complete, and nothing
            # of it may stay open upstream (HAProxy closes at once). Requests before it are still answered.
            self.parsing = None
            if ex.started:
                ex.abort()
                return False
            self.queue.remove(ex)
            ex.discard()
        # A client half-close: finish what is in flight (RFC 9112 §9.6), then close.
        if self.queue and self.tunnel is None:
            self.half_closed = True
            return True
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.tunnel or (self.queue[0] if self.queue else None)
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.tunnel or (self.queue[0] if self.queue else None)
        if ex is not None and ex.upstream is not None and ex.upstream.transport is not None:
            ex.upstream.transport.resume_reading()

    # -- parser callbacks --------------------------------------------------------------------

    # The head size limit is checked per read while a head is incomplete (so a head arriving in pieces
    # holds no more than the limit and one read), and exactly when it completes (`_request`): not per
    # field, where the accounting cost more than the rest of the callback (measure it with
    # `python -m loadtest.hotpath --fields browser-request --instructions`).

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # it is the one calling
        ex = self._request(parser)
        self.url = b""  # ready for the next head
        self.headers = []
        self._queue(ex)

    def on_fast_head(self) -> None:
        """A head `_fast_heads` split, now checked by llhttp (`_FastHead`)."""
        plan = self.plan
        if plan is None:  # never: `_fast_heads` plans each head it feeds, and a closed parser refuses the rest
            raise _Reject(RESPONSE_400)
        self.plan = None
        self._queue(self._fast_request(plan))

    def _queue(self, ex: Exchange) -> None:
        self.in_head = False
        self.head_size = 0
        self.parsing = ex
        queue = self.queue
        queue.append(ex)
        if len(queue) > 1:
            self.pause_reading(self.P_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.request_body(body)
            if not self.queue or self.queue[0] is ex:
                self.deadline = self.dp.now + self.dp.idle_timeout

    def on_message_complete(self) -> None:
        ex = self.parsing
        if ex is not None:
            if self.upgrade_body != -2:
                return  # llhttp skips an Upgrade request's body: `_upgrade` reads it
            if self.headers:
                self.headers = []  # trailer fields: dropped with their message, never the next request's
            self.head_size = 0
            ex.request_done()
            self.parsing = None

    def _request(self, parser: httptools.HttpRequestParser) -> Exchange:
        """Validate the head just parsed (`self.url`, `self.headers`) and build the upstream request head once."""
        dp = self.dp
        method = parser.get_method()
        if method == b"CONNECT":
            raise _Reject(RESPONSE_405_CONNECT)

        # One pass over the fields: most names are copied as they are; only names whose first letter
        # could start a field we act on are lowercased and looked up (Server, Date, Accept... are not).
        parts = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        extend = parts.extend
        host: bytes | None = None
        hosts = 0
        content_length = -1
        chunked = False
        expect_continue = False
        connection_tokens: set[bytes] | None = None
        has_connection = False
        upgrade_value = b""
        xff = xfh = xfp = via = request_id = b""
        trusted = self.trusted
        size = len(self.url)
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if (name[0] | 32) in _REQ_FIRST:
                kind = _REQ_FIELDS.get(name.lower(), _COPY)
                if kind != _COPY:
                    if kind == _HOST:
                        hosts += 1
                        host = value
                        extend((name, b": ", value, b"\r\n"))
                    elif kind == _LENGTH:
                        content_length = int(value)  # llhttp accepted it: digits only, not repeated
                        if value[0] == 48 and len(value) > 1:  # leading zeros: forward the number itself
                            value = b"%d" % content_length
                        extend((name, b": ", value, b"\r\n"))
                    elif kind == _TE:
                        # llhttp accepts any codings with `chunked` last; the proxy re-frames the body, so
                        # another coding would be lost (RFC 9112 §6.1: 501), and a second field is refused.
                        if chunked:
                            raise _Reject(RESPONSE_400)
                        codings = value.lower()
                        if codings.strip() != b"chunked":
                            last = codings.rsplit(b",", 1)[-1].strip()
                            raise _Reject(RESPONSE_501_CODING if last == b"chunked" else RESPONSE_400)
                        chunked = True
                    elif kind == _CONNECTION:
                        has_connection = True
                        connection_tokens = connection_fields(value, connection_tokens)
                    elif kind == _UPGRADE:
                        upgrade_value = value
                    elif kind == _EXPECT:
                        expect_continue = value.lower() == b"100-continue"
                        extend((name, b": ", value, b"\r\n"))
                    elif trusted:  # forwarding fields: extended from a trusted peer, else replaced
                        if kind == _REQUEST_ID:
                            request_id = request_id or value  # kept (the first one); else one is generated
                        elif kind == _XFF:
                            xff = xff + b", " + value if xff else value
                        elif kind == _XFH:
                            xfh = value
                        elif kind == _XFP:
                            xfp = value
                        elif kind == _VIA:
                            via = via + b", " + value if via else value
                        elif kind == _FORWARDED_FIELD:
                            extend((name, b": ", value, b"\r\n"))
                    continue
            extend((name, b": ", value, b"\r\n"))
        if size > dp.max_header_bytes:
            raise _Reject(RESPONSE_431)
        keep_alive = parser.should_keep_alive()
        if not keep_alive:
            self.fast_off = True  # llhttp refuses what follows a message that closes: this parser must see it
        self._version(parser, keep_alive and not has_connection)
        self._check_host(host, hosts)
        if expect_continue and not self.http11:
            # RFC 9110 §10.1.1: no 1xx to an HTTP/1.0 client, so the upstream is not asked for one either.
            expect_continue = False
            parts = drop_fields(parts, _EXPECT_NAME, 4)
            extend = parts.extend
        if chunked and not self.http11:
            raise _Reject(RESPONSE_400)  # RFC 9112 §6.1: faulty framing in HTTP/1.0
        limit = dp.max_body_bytes
        if limit and content_length > limit:
            raise _Reject(RESPONSE_413)
        upgrade = bool(upgrade_value) and parser.should_upgrade()
        if upgrade and (chunked or content_length > 0):
            # An Upgrade request with a body: the body is forwarded as a body and the upgrade ignored
            # (RFC 9110 §7.8); the connection closes after the answer (`_BodyAfterUpgrade`).
            upgrade = keep_alive = False
            self.upgrade_body = -1 if chunked else content_length
        if connection_tokens is not None:
            parts = drop_fields(parts, connection_tokens, 4)
            extend = parts.extend
        if self.url[:1] != b"/":
            if self.url == b"*":
                if method != b"OPTIONS":
                    raise _Reject(RESPONSE_400)  # RFC 9112 §3.2.4: asterisk-form is for OPTIONS only
            else:
                # Absolute-form (RFC 9112 §3.2.2): origin-form upstream, the target's authority as the one Host.
                parts[2], host = _origin_form(self.url)
                if _HOST_VALUE.fullmatch(host) is None:
                    raise _Reject(RESPONSE_400)
                parts = drop_fields(parts, _HOST_NAME, 4)
                extend = parts.extend
                extend((b"host: ", host, b"\r\n"))

        return self._forward(
            method,
            host,
            parts,
            xff,
            xfh,
            xfp,
            via,
            request_id,
            chunked or content_length > 0,  # has a body
            chunked,
            expect_continue,
            upgrade_value if upgrade else b"",
            keep_alive,
        )

    def _version(self, parser: httptools.HttpRequestParser, plain: bool) -> None:
        """HTTP/1.1 or 1.0 (`http11`), else 505. `plain`: kept alive with no `Connection` field, which llhttp
        does for HTTP/1.1 only (1.0 and 2.0 need `keep-alive`; other versions are refused), so the common
        request skips get_http_version(), which formats a str on every call (~4 % of the request path)."""
        if plain:
            self.http11 = True
            return
        version = parser.get_http_version()
        if version == "1.1":
            self.http11 = True
        elif version == "1.0":
            self.http11 = False
        else:
            raise _Reject(RESPONSE_505)

    def _check_host(self, host: bytes | None, hosts: int) -> None:
        if hosts > 1 or (hosts == 0 and self.http11):
            raise _Reject(RESPONSE_400)  # RFC 9112 §3.2
        if host is not None and host != self.last_host:
            # RFC 9110 §7.2: `uri-host [":" port]`, nothing else (no userinfo, path, list, empty value). A
            # keep-alive connection sends the same Host each time: checked once per connection and value.
            if _HOST_VALUE.fullmatch(host) is None:
                raise _Reject(RESPONSE_400)
            self.last_host = host

    def _fast_request(self, plan: Plan) -> Exchange:
        """`_request` for a head `_scan` found plain: its field lines go upstream as they came (less a
        `Connection: keep-alive|close`), and no field of it asks for more than the Host check."""
        dp = self.dp
        fast = self.fast
        assert fast is not None
        method, url, version, fields, host, hosts, size, length = plan  # as llhttp accepted them
        if size > dp.max_header_bytes:
            raise _Reject(RESPONSE_431)
        limit = dp.max_body_bytes
        if limit and length > limit:
            raise _Reject(RESPONSE_413)
        keep_alive = fast.should_keep_alive()
        if not keep_alive:
            # The message closes the connection: llhttp refuses whatever follows, now or in a later read, so
            # that parser reads it all (`_request` does the same for one the other parser parsed).
            self.parser = fast
            self.fast_off = True
        if version == b"HTTP/1.1":
            self.http11 = True
        elif version == b"HTTP/1.0":
            self.http11 = False
        else:
            self._version(fast, False)  # 505
        self._check_host(host, hosts)
        parts = [method, b" ", url, b" HTTP/1.1\r\n", fields]
        return self._forward(method, host, parts, b"", b"", b"", b"", b"", length > 0, False, False, b"", keep_alive)

    def _forward(
        self,
        method: bytes,
        host: bytes | None,
        parts: list[bytes],
        xff: bytes,
        xfh: bytes,
        xfp: bytes,
        via: bytes,
        request_id: bytes,
        has_body: bool,
        chunked: bool,
        expect_continue: bool,
        upgrade_value: bytes,
        keep_alive: bool,
    ) -> Exchange:
        """The application and pool of a checked head, its forwarding fields, and its Exchange (`upgrade_value`:
        the Upgrade field's value of an upgrade request, else empty)."""
        dp = self.dp
        app_map = dp.app_map
        app = self.app
        if app is None or host != self.app_host or app_map is not self.app_map:
            app = self._app_for(host, app_map)
        if host is None:
            # HTTP/1.0 without Host: name the authority the client reached, as the upstream needs one.
            sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
            host = f"{sock[0]}:{sock[1]}".encode() if sock else b"localhost"
            parts.extend((b"host: ", host, b"\r\n"))
        # Pieces are appended one by one: under mypyc `append` is a C call, `extend` of a tuple an allocation more.
        if xff or xfp or via:
            parts.append(b"x-forwarded-for: ")
            parts.append(xff + b", " + self.peer if xff else self.peer)
            parts.append(b"\r\nx-forwarded-proto: ")
            parts.append(xfp or (b"https" if self.dp.tls.get(self.role) else b"http"))
            parts.append(b"\r\nvia: ")
            parts.append(via + b", " + VIA if via else VIA)
            parts.append(b"\r\n")
        else:
            parts.append(self.xff_line)  # built once per connection
            parts.append(self.proto_via)  # once per listener
        if xfh or host:
            parts.append(b"x-forwarded-host: ")
            parts.append(xfh or host)
            parts.append(b"\r\n")
        if not request_id:
            ids = dp.request_ids  # a per-process prefix and a counter: one format per request
            ids.count += 1
            request_id = ids.template % ids.count
        parts.append(b"x-request-id: ")
        parts.append(request_id)
        if chunked:
            parts.append(b"\r\ntransfer-encoding: chunked")
        if upgrade_value:
            parts.append(b"\r\nconnection: upgrade\r\nupgrade: ")
            parts.append(upgrade_value)
        parts.append(b"\r\n\r\n")

        routes = app.routes  # the one read of the snapshot for this request
        if dp.route_word[app.index] != routes.word:
            routes = dp.follow_routes(app)  # a worker whose supervisor flipped: one 8-byte load per request
        pool = routes.active if self.role == "active" else routes.preview
        if dp.fence_until and dp.loop.time() > dp.fence_until:
            pool = None  # fenced: this proxy cannot vouch that its routes are still the fleet's (503)
        if pool is None:
            pool = dp.null_pool
        head = b"".join(parts)
        keep_alive = keep_alive and not self.closing
        upgrade = bool(upgrade_value)
        # Named classes, not a class held in an attribute: mypyc then calls their constructors directly (a
        # class from an attribute is a generic call that parses its 11 arguments by name, ~1k instructions).
        if dp.access_log is None:
            return Exchange(
                dp, self, pool, head, method, has_body, chunked, expect_continue, upgrade, keep_alive, request_id
            )
        # One that notes its access-log line (`proxy.dataplane.accesslog`).
        return LoggedExchange(
            dp, self, pool, head, method, has_body, chunked, expect_continue, upgrade, keep_alive, request_id
        )

    def _app_for(self, host: bytes | None, app_map: HostMap) -> App:
        """The application a Host names (HTTP/1.0 without one: the default); 404 when none does, 421 when it
        is not the application of the TLS server name the connection was opened for (RFC 9110 §15.5.20)."""
        app = app_map.find(host) if host is not None else app_map.default
        if app is None:
            raise _Reject(RESPONSE_404_HOST)
        sni = self.sni
        if sni is not None and app_map.find(sni) is not app:
            raise _Reject(RESPONSE_421)
        self.app, self.app_host, self.app_map = app, host, app_map
        return app

    # -- flow and lifecycle ------------------------------------------------------------------

    def pause_reading(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after sending what is held (and what the transport still buffers)."""
        self.send_held()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection now: held bytes are dropped with it."""
        self.held.clear()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _upgrade(self, rest: bytes) -> None:
        queue = self.queue
        if not queue:
            self._reject(RESPONSE_400)
            return
        length = self.upgrade_body
        if length != -2:
            self.upgrade_body = -2
            reader = _BodyAfterUpgrade(self)
            self.parser = httptools.HttpRequestParser(reader)
            framing = b"transfer-encoding: chunked" if length < 0 else b"content-length: %d" % length
            self.parser.feed_data(b"POST / HTTP/1.1\r\nhost: body\r\n" + framing + b"\r\n\r\n")
            if rest:
                self.data_received(rest)
            return
        ex = queue[-1]
        ex.tunnel_pending = rest
        if not ex.upgrade:
            self._reject(RESPONSE_400)
            return
        self.pause_reading(self.P_UPGRADE)

    def start_tunnel(self, ex: Exchange) -> None:
        self.tunnel = ex
        self.resume_reading(self.P_UPGRADE | self.P_PIPELINE)

    def _reject(self, response: bytes | None) -> None:
        """A malformed or refused request: answer it in turn, then close. It never reaches an upstream."""
        self.pause_reading(self.P_REJECT)
        if response is None:
            return  # read no more: what is queued is answered, then the connection closes
        ex = self.parsing
        self.parsing = None
        if ex is not None:
            if ex.started:
                # Its body broke mid-stream: the upstream sees a truncated request at most; the client gets
                # `response` if no response byte went out yet, else a cut connection.
                ex.refuse(response)
                return
            self.queue.remove(ex)
            ex.discard()
        if self.reject is None:
            self.reject = response
        if not self.queue:
            self._send_reject()

    def _send_reject(self) -> None:
        if self.transport is not None and not self.closed:
            self.write(self.reject or RESPONSE_400)
            self.linger()

    def linger(self) -> None:
        """Close after an answer while the client may still be sending (a refused head, an unread body).

        Closing with unread input makes the kernel send a reset, which can destroy the answer before the
        client reads it (RFC 9112 §9.6). So: send what is held, shut our side, then read and discard until
        the client closes or `LINGER` passes (nginx's lingering close).
        """
        transport = self.transport
        if self.closed or transport is None:
            return
        if not transport.can_write_eof():
            self.close()
            return
        self.send_held()
        self.lingering = True
        self.closing = True
        transport.write_eof()
        self.deadline = self.dp.now + LINGER
        # Read again, to discard: data_received drops everything while P_REJECT is set.
        if self.paused:
            transport.resume_reading()
        self.paused = self.P_REJECT

    def exchange_finished(self, ex: Exchange, aborted: bool) -> None:
        queue = self.queue
        if queue and queue[0] is ex:
            queue.pop(0)
        else:
            try:
                queue.remove(ex)
            except ValueError:
                pass
        if self.tunnel is ex:
            self.tunnel = None
        if self.closed or self.transport is None:
            return
        if aborted:
            self.abort()
            return
        if ex.client_close or (self.closing and not self.dp.shutting_down):
            # The connection ends with this response: pipelined requests behind it never go upstream. (At a
            # graceful stop, a response that went out promising keep-alive is followed like an idle connection:
            # the client may already be sending its next request, answered with `Connection: close`.)
            self.closing = True
            while queue:
                queue.pop(0).discard()
            if ex.body_done and not self.paused & self.P_REJECT:
                self.close()
            else:
                self.linger()  # the client may still be sending the body this answer did not wait for
            return
        if queue:
            nxt = queue[0]
            if len(queue) == 1:
                self.resume_reading(self.P_PIPELINE)
            if not nxt.started:
                nxt.start()
            return
        if self.reject is not None:
            self._send_reject()
        elif self.half_closed:
            self.close()
        else:
            self.served = True
            if self.closing:  # a graceful stop: the grace counts on the loop's clock (`dp.now` is up to a tick old)
                self.deadline = self.dp.loop.time() + IDLE_GRACE
            else:
                self.deadline = self.dp.now + self.dp.keepalive_timeout
            if self.paused:
                self.resume_reading(self.P_PIPELINE)

    def on_timeout(self) -> None:
        if self.closed or self.transport is None:
            return
        if self.lingering:
            self.transport.close()
        elif self.tunnel is not None:
            self.tunnel.abort()
        elif self.queue:
            self.queue[0].timeout()
        elif self.in_head:
            self.write(RESPONSE_408)
            self.close()
        elif not self.paused and _unread(self.transport):
            self.deadline = self.dp.now + IDLE_GRACE  # a request came as the wait ended: the loop reads it next
        else:
            self.close()

    def shutdown(self) -> None:
        """Graceful stop: a busy connection closes after its current response (with `Connection: close`); an idle
        one has `IDLE_GRACE` from now to send its next request, answered with `Connection: close` too, and the
        sweep closes it if it sent none. However long it was idle before, a client that sends after a pause is
        never cut by the stop: closing an idle connection races with a request on its way, so the stop gives
        each one that second (the old process lingers that much longer, for what still runs there anyway)."""
        self.closing = True
        if self.transport is None or self.closed or self.queue or self.in_head or self.tunnel is not None:
            return
        self.deadline = min(self.deadline, self.dp.loop.time() + IDLE_GRACE)


def _unread(transport: asyncio.Transport) -> bool:
    """Bytes the kernel holds for this connection that the loop has not read yet (FIONREAD)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]) > 0
    except OSError:
        return False
