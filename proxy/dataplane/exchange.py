"""One request/response cycle: pick an endpoint, send the request, relay the response.

Callback-driven, with no task per request: an Exchange is started synchronously when a pooled
upstream connection is idle (the common case under load) and only creates a task to connect a new
one. It is bound to the pool the RouteTable snapshot named when its head was parsed, and never
leaves that pool: retries stay inside it, and a flip never touches it.

Retry rule (RFC 9110 §9.2.2): a failed connect is always retried; after the request head was
written, only an idempotent request whose body was not sent, or a request that was still waiting
for `100 Continue`, is retried. Nothing is retried once any response byte arrived.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

from proxy.dataplane.http import (
    CONTINUE_100,
    IDEMPOTENT,
    VIA,
    connection_fields,
    error_response,
    status_line,
)
from proxy.dataplane.upstream import (
    FIELD_CONNECTION,
    FIELD_COPY,
    FIELD_LENGTH,
    FIELD_TE,
    FIELD_UPGRADE,
    RESP_FIELDS,
    UpstreamConnection,
)

if TYPE_CHECKING:
    from proxy.dataplane.client import ClientConnection
    from proxy.dataplane.plane import DataPlane
    from proxy.dataplane.pool import Endpoint, Pool

BUFFER_LIMIT: Final = 256 * 1024  # request body held while connecting before the client is paused

RESPONSE_502 = error_response(502, "Bad Gateway", close=False)
RESPONSE_502_CLOSE = error_response(502, "Bad Gateway", close=True)
RESPONSE_503 = error_response(
    503, "Service Unavailable: no endpoint available", close=False, extra=b"retry-after: 1\r\n"
)
RESPONSE_503_CLOSE = error_response(
    503, "Service Unavailable: no endpoint available", close=True, extra=b"retry-after: 1\r\n"
)
RESPONSE_504 = error_response(504, "Gateway Timeout", close=False)
RESPONSE_504_CLOSE = error_response(504, "Gateway Timeout", close=True)
RESPONSE_413_CLOSE = error_response(413, "Content Too Large", close=True)
_ERRORS = {
    502: (RESPONSE_502, RESPONSE_502_CLOSE),
    503: (RESPONSE_503, RESPONSE_503_CLOSE),
    504: (RESPONSE_504, RESPONSE_504_CLOSE),
}

# The first letters of the response fields the proxy acts on (`RESP_FIELDS`, kinds in `proxy.dataplane.upstream`),
# for `_cut_hop_by_hop`.
_RESP_FIRST: Final = frozenset(name[0] for name in RESP_FIELDS)
_CONNECTION_PLAIN: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
_VIA_LINE: Final = b"via: " + VIA + b"\r\n"

# Response-side states (Final: mypyc compiles them in as constants, not a module lookup per use).
WAITING: Final = 0
HEAD_SENT: Final = 1
DONE: Final = 2


def _cut_hop_by_hop(fields: bytes) -> tuple[bytes, bytes, bytes]:
    """The general case of a response head's fields (`CRLF name: value` each, then a CRLF): remove every
    hop-by-hop field, and those `Connection` names (RFC 9110 §7.6.1). Returns the fields left, the
    transfer codings (lowercased, every Transfer-Encoding field joined) and the Upgrade value."""
    kept: list[bytes] = []
    drop: set[bytes] | None = None
    codings = b""
    upgrade_value = b""
    if not fields:
        return b"", b"", b""
    lines = fields[2:-2].split(b"\r\n")
    for line in lines:
        if (line[0] | 32) in _RESP_FIRST:
            colon = line.find(b":")
            kind = RESP_FIELDS.get(line[:colon].lower(), FIELD_COPY)
            if kind == FIELD_TE:
                value = line[colon + 1 :].strip().lower()
                codings = codings + b", " + value if codings else value
            elif kind == FIELD_CONNECTION:
                drop = connection_fields(line[colon + 1 :], drop)
            elif kind == FIELD_UPGRADE:
                upgrade_value = line[colon + 1 :].strip()
            if kind != FIELD_COPY and kind != FIELD_LENGTH:
                continue
        kept.append(line)
    if drop is not None:
        kept = [line for line in kept if line[: line.find(b":")].lower() not in drop]
    return (b"\r\n" + b"\r\n".join(kept) + b"\r\n" if kept else b""), codings, upgrade_value


def _plain_option(head: bytes, start: int, end: int) -> bool:
    """Whether the value of a Connection field line, `start` to `end` in `head`, is one option naming no field."""
    while start < end and (head[start] == 32 or head[start] == 9):
        start += 1
    while end > start and (head[end - 1] == 32 or head[end - 1] == 9):
        end -= 1
    # One slice and whole-value compares (C under mypyc); `lower` (a generic call) only for other cases.
    value = head[start:end]
    if value == b"keep-alive" or value == b"close" or value == b"upgrade":
        return True
    return value.lower() in _CONNECTION_PLAIN


def _split_codings(codings: bytes) -> tuple[bool, bytes]:
    """Whether a response's transfer codings end with `chunked` (else it is close-delimited, RFC 9112 §6.3),
    and the codings other than that final `chunked`, which the client must still be told (`gzip`, ...)."""
    names = [name.strip() for name in codings.split(b",") if name.strip()]
    chunked = bool(names) and names[-1] == b"chunked"
    if chunked:
        names.pop()
    return chunked, b", ".join(names)


class Exchange:
    __slots__ = (
        "attempts",
        "body_done",
        "body_sent",
        "chunked_request",
        "client",
        "client_close",
        "connect_task",
        "continue_sent",
        "dp",
        "endpoint",
        "expect_continue",
        "head",
        "head_index",
        "method",
        "is_head",
        "listener",
        "out",
        "pending",
        "pending_size",
        "pool",
        "request_bytes",
        "request_id",
        "resp_chunked",
        "resp_eof",
        "resp_no_body",
        "response_started",
        "sent_at",
        "started",
        "state",
        "status",
        "tunnel",
        "tunnel_pending",
        "upgrade",
        "upstream",
        "upstream_reusable",
    )

    def __init__(
        self,
        dp: DataPlane,
        client: ClientConnection,
        pool: Pool,
        head: bytes,
        method: bytes,
        has_body: bool,
        chunked_request: bool,
        expect_continue: bool,
        upgrade: bool,
        keep_alive: bool,
        request_id: bytes = b"",
    ) -> None:
        self.dp = dp
        self.client = client
        self.listener = client.listener
        self.pool = pool
        self.head = head
        self.method = method
        self.is_head = method == b"HEAD"
        self.chunked_request = chunked_request
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.client_close = not keep_alive
        self.body_done = not has_body
        self.body_sent = False
        self.continue_sent = False
        self.pending: list[bytes] | None = None  # request bytes held until connected (rare: no list per request)
        self.pending_size = 0
        self.request_bytes = 0
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.attempts = 0
        self.started = False
        self.state = WAITING
        self.status = 0
        self.sent_at = 0.0
        self.response_started = False
        self.resp_chunked = False
        self.resp_eof = False  # close-delimited upstream body
        self.resp_no_body = False
        self.upstream_reusable = True
        self.out: list[bytes] = []
        self.head_index = -1  # where the final response head waits in `out` until flushed (-1: none or sent)
        self.tunnel = False
        self.tunnel_pending = b""
        self.request_id = request_id  # X-Request-Id as sent upstream (kept from a trusted peer, else generated)
        pool.in_flight += 1

    # -- request side ----------------------------------------------------------------------

    def start(self) -> None:
        """Called by the client connection when this exchange is first in line."""
        self.started = True
        self.client.deadline = self.dp.now + self.dp.upstream_header_timeout
        self._try_endpoint(None)

    def _try_endpoint(self, exclude: Endpoint | None) -> None:
        ep = self.pool.pick(exclude)
        if ep is None:
            self.respond_error(503)
            return
        self.attempts += 1
        self.endpoint = ep
        ep.in_flight += 1
        idle = ep.idle
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection, the least likely to be closed by the upstream
            if not conn.closed:
                self._attach(conn)
                return
            conn.close()
        self.connect_task = self.dp.loop.create_task(self._connect(ep))

    async def _connect(self, ep: Endpoint) -> None:
        dp = self.dp
        try:
            async with asyncio.timeout(dp.timeouts.connect):
                pool = ep.pool
                _, conn = await dp.loop.create_connection(
                    lambda: UpstreamConnection(ep, dp.outbox),
                    ep.host,
                    ep.port,
                    ssl=pool.ssl,
                    server_hostname=(pool.server_name or ep.host) if pool.ssl is not None else None,
                )
        except TimeoutError:
            self.connect_task = None
            self._connect_failed(ep, 504)
            return
        except OSError:
            self.connect_task = None
            self._connect_failed(ep, 502)
            return
        self.connect_task = None
        if self.state == DONE or self.endpoint is not ep:
            dp.release(conn)  # the client left while we connected; keep the fresh connection
            return
        self._attach(conn)

    def _connect_failed(self, ep: Endpoint, status: int) -> None:
        ep.connect_failed(self.dp.now, self.dp.outlier)
        if self.state == DONE or self.endpoint is not ep:
            return
        ep.in_flight -= 1
        self.endpoint = None
        if self.attempts <= self.dp.retries:
            self._try_endpoint(ep)
        else:
            self.respond_error(status)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.bind(self)
        transport = conn.transport
        assert transport is not None
        if self.client.write_paused:
            transport.pause_reading()
        self.sent_at = perf_counter()  # not the loop's clock: uvloop's steps in whole milliseconds
        if self.pending:
            # The head and the body read with it: one write, joined only while small (`Sender.write_parts`).
            conn.write_parts([self.head, *self.pending])
            self.body_sent = True
            self.pending = None
            self.pending_size = 0
            self.client.resume_reading(self.client.P_BUFFER)
        else:
            conn.write(self.head)

    def request_body(self, data: bytes) -> None:
        if self.state == DONE:
            return  # the response is over (an early answer): the rest of the body is dropped
        self.request_bytes += len(data)
        limit = self.dp.max_body_bytes
        if limit and self.request_bytes > limit:
            self._body_too_large()
            return
        if self.chunked_request:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.write(data)
            self.body_sent = True
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > BUFFER_LIMIT:
                self.client.pause_reading(self.client.P_BUFFER)

    def request_done(self) -> None:
        if self.body_done:
            return
        self.body_done = True
        if self.chunked_request and self.state != DONE:
            conn = self.upstream
            if conn is not None and conn.transport is not None:
                conn.write(b"0\r\n\r\n")
            elif self.pending is None:
                self.pending = [b"0\r\n\r\n"]
            else:
                self.pending.append(b"0\r\n\r\n")

    def _body_too_large(self) -> None:
        self.client_close = True
        if self.state == WAITING:
            self._drop_upstream()
            self._finish_with(RESPONSE_413_CLOSE, 413)
        else:
            self.abort()

    # -- response side (called by UpstreamConnection) ------------------------------------------

    def response_head(self, status: int, head: bytes, found: list[int], parser: Any) -> None:
        """`head`: the upstream's raw response head, status line to the empty line, as llhttp accepted it;
        `found`: where its lines end and its fields in `RESP_FIELDS` are (`fieldscan.scan`)."""
        self.response_started = True
        if status < 200 and status != 101:
            # Interim responses: relay 100 only to a client that asked for it, 103 to HTTP/1.1 clients.
            if status == 100:
                if self.expect_continue and not self.continue_sent:
                    self.continue_sent = True
                    self.out.append(CONTINUE_100)
            elif status == 103 and self.client.http11:
                self._put_head(status, head, found, interim=True)
            return
        if status == 101 and not self.upgrade:
            self.upstream_failed("101 without an upgrade request")
            return
        self.status = status
        ep = self.endpoint
        assert ep is not None
        ep.responded()
        self.pool.observe(status, perf_counter() - self.sent_at, self.listener)
        self.upstream_reusable = parser.should_keep_alive()
        self.resp_no_body = self.is_head or status == 204 or status == 304 or status == 101
        if self.upgrade and status != 101:
            self.client_close = True  # the client's parser is past an upgrade request: start over
        self.head_index = len(self.out)
        if not self._put_head(status, head, found, interim=False):
            return  # a head the client cannot be given (`_put_head` answered 502)
        self.state = HEAD_SENT
        if self.resp_no_body and status != 101:
            # The parser cannot be told a HEAD response has no body: finish now, renew it before reuse.
            if self.is_head and self.upstream is not None:
                self.upstream.must_renew_parser = True
            self.response_complete()

    def _put_head(self, status: int, head: bytes, found: list[int], *, interim: bool) -> bool:
        """Append the head for the client to `out`, in pieces (`flush` writes them with the body in one
        write: one join, not one for the head and another for the write). False when there is none to send
        (`respond_error` answered 502 instead)."""
        # The field lines are copied as they came: llhttp accepted them, so each is exactly
        # `name ":" OWS value OWS`. Only the fields `fieldscan.scan` found (names in `RESP_FIELDS`) are read,
        # by offset (under mypyc a bytes method is a generic call: the lowercased copy and the regex and `find`
        # searches this replaced cost 9.8k instructions per head; `python -m loadtest.hotpath --instructions`).
        # The status line is rebuilt (HTTP/1.1; the reason phrase from the code: RFC 9110 §15.1).
        first = found[1]  # the status line's length: `head[first:]` is CRLF + line per field, ..., CRLF CRLF
        upgrade_value = codings = b""
        chunked = False
        has_length = False
        rare = False  # a hop-by-hop field other than Connection: the general case cuts them
        general = False  # or a Connection field that names fields, or a second one
        cut = -1
        cut_end = 0
        for index in range(2, len(found), 4):
            kind = found[index]
            if kind == FIELD_LENGTH:
                has_length = True
            elif kind == FIELD_CONNECTION:
                end = found[index + 3]
                if cut < 0 and _plain_option(head, found[index + 2], end):
                    cut = found[index + 1] - 2  # the line with the CRLF before it
                    cut_end = end
                else:
                    general = True
            else:
                rare = True
        out = self.out
        if rare or general:
            fields, codings, upgrade_value = _cut_hop_by_hop(head[first:-2])
            # llhttp refuses a response with a length and chunked
            content_length = has_length if rare else self.upstream_reusable or has_length
            if codings:
                chunked, codings = _split_codings(codings)
                if codings:
                    # A coding the proxy does not decode (`gzip`): the body is relayed as it came, re-framed,
                    # and the client told the coding; an HTTP/1.0 client cannot be (RFC 9112 §6.1): 502.
                    if not self.client.http11:
                        self.respond_error(502)
                        return False
                    content_length = False
            out.append(status_line(status))
            out.append(fields[2:])
        else:
            # No Transfer-Encoding, so an upstream connection that stays open (llhttp: not close-delimited)
            # means a Content-Length. The usual head: at most a `Connection: keep-alive` (or close) to cut out,
            # so its fields go as one or two slices of `head`. Pieces are appended one by one: under mypyc
            # `append` is a C call, where a bound `extend` of a tuple is a generic call and an allocation.
            content_length = self.upstream_reusable or has_length
            out.append(status_line(status))
            if cut < 0:
                out.append(head[first + 2 : -2])
            elif cut > first:
                out.append(head[first + 2 : cut])
                out.append(head[cut_end:-2])
            else:  # the first field is the one cut
                out.append(head[cut_end + 2 : -2])
        if interim:
            out.append(b"\r\n")
            return True
        client = self.client
        out.append(_VIA_LINE)
        out.append(self.pool.color_header)
        if status == 101:
            out.append(b"connection: upgrade\r\nupgrade: ")
            out.append(upgrade_value)
            out.append(b"\r\n\r\n")
            return True
        if (chunked or not content_length) and not self.resp_no_body:
            self.resp_eof = not chunked
            # Chunked or close-delimited upstream body: re-frame as chunked for HTTP/1.1 clients; an
            # HTTP/1.0 client gets a close-delimited body.
            if client.http11:
                self.resp_chunked = True
                if codings:
                    out.append(b"transfer-encoding: ")
                    out.append(codings)
                    out.append(b", chunked\r\n")
                else:
                    out.append(b"transfer-encoding: chunked\r\n")
            else:
                self.client_close = True
        if self.client_close or client.closing:
            self.client_close = True
            out.append(b"connection: close\r\n\r\n")
        elif not client.http11:
            out.append(b"connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")
        return True

    def response_body(self, data: bytes) -> None:
        if self.state != HEAD_SENT or self.resp_no_body:
            return
        if self.resp_chunked:
            if data:
                self.out.append(b"%x\r\n" % len(data))
                self.out.append(data)
                self.out.append(b"\r\n")
        else:
            self.out.append(data)

    def flush(self) -> None:
        """Write what the last upstream read produced (once per read, not per callback)."""
        out = self.out
        if out:
            client = self.client
            if len(out) == 1:
                client.write(out[0])
            else:
                client.write_parts(out)  # head and body of one read: joined unless the body is large
            out.clear()
            self.head_index = -1
            # Bytes moved: the idle timeout starts again (coarse clock: one read, one write).
            client.deadline = self.dp.now + self.dp.idle_timeout

    def response_complete(self) -> None:
        if self.state != HEAD_SENT or self.tunnel or self.status == 101:
            return  # a 101 completes as a tunnel, in upstream_upgraded
        if self.resp_chunked:
            self.out.append(b"0\r\n\r\n")
        self.flush()  # one write for head and body when both came in one read (the common small response)
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            # Reused only once the read that completed this response was parsed to its end with nothing after
            # it (`UpstreamConnection.data_received`); never after an upgrade request answered without 101.
            conn.finished(self.upstream_reusable and self.body_done and not self.upgrade)
        if not self.body_done:
            self.client_close = True
        self._finish(self.status)

    def upstream_upgraded(self, rest: bytes) -> None:
        """The upstream answered 101: from now on both connections are a byte tunnel."""
        if self.status != 101:
            self.upstream_failed("unexpected upgrade")
            return
        self.tunnel = True
        self.flush()
        if rest:
            self.client.write(rest)
        self.client.start_tunnel(self)
        if self.tunnel_pending and self.upstream is not None and self.upstream.transport is not None:
            self.upstream.write(self.tunnel_pending)
            self.tunnel_pending = b""

    def tunnel_to_client(self, data: bytes) -> None:
        self.client.write(data)
        self.client.deadline = self.dp.now + self.dp.idle_timeout

    def tunnel_to_upstream(self, data: bytes) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.write(data)
        self.client.deadline = self.dp.now + self.dp.idle_timeout

    # -- failures --------------------------------------------------------------------------

    def _retryable(self) -> bool:
        if self.response_started or self.tunnel:
            return False
        if self.method in IDEMPOTENT:  # asked only on a failure, never per request
            return not self.body_sent and not self.pending_size
        return self.expect_continue and not self.continue_sent and not self.body_sent

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The upstream connection closed while bound to this exchange."""
        if self.upstream is not conn or self.state == DONE:
            return
        self.upstream = None
        if self.tunnel:
            self._end_tunnel()
            return
        if self.state == HEAD_SENT and self.resp_eof:
            # A close-delimited body (no length, not chunked) ends with the connection: success.
            if self.resp_chunked:
                self.out.append(b"0\r\n\r\n")
            self.flush()
            if not self.body_done:
                self.client_close = True
            self._finish(self.status)
            return
        self._fail_after_upstream_error("upstream closed the connection")

    def upstream_failed(self, reason: str) -> None:
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self._fail_after_upstream_error(reason)

    def _fail_after_upstream_error(self, reason: str) -> None:
        ep = self.endpoint
        if ep is not None and self.state == WAITING:
            if self._retryable() and self.attempts <= self.dp.retries:
                ep.in_flight -= 1
                self.endpoint = None
                self._try_endpoint(ep)
                return
        if self.state == HEAD_SENT and self.head_index >= 0:
            # The head was parsed but not yet sent (a bad chunk in the same read): the client can still be
            # told the truth with a 502, as HAProxy does, instead of a cut connection with no byte.
            del self.out[self.head_index :]
            self.respond_error(502)
        elif self.state == WAITING:
            self.respond_error(502)
        else:
            self.abort()  # part of the response is out: the only honest signal left is a cut connection

    def timeout(self) -> None:
        """The client connection's deadline passed while this exchange was active."""
        if self.state == WAITING:
            self._drop_upstream()
            self.respond_error(504)
        else:
            self.abort()

    def respond_error(self, status: int) -> None:
        self._drop_upstream()
        if self.upgrade or not self.body_done:
            self.client_close = True  # unread request bytes would be taken for the next request
        if self.client.closing:
            self.client_close = True
        keep, close = _ERRORS[status]
        self._finish_with(close if self.client_close else keep, status)

    def _finish_with(self, response: bytes, status: int) -> None:
        self.out.clear()
        self.client.write(response)
        self.pool.counts[self.listener * 6 + status // 100] += 1
        self._finish(status)

    def _drop_upstream(self) -> None:
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def refuse(self, response: bytes) -> None:
        """The client's request broke after it started (trailers past the limit): answer `response` while no
        response byte went out, else cut both sides."""
        if self.state == WAITING:
            self._drop_upstream()
            self.client_close = True
            self._finish_with(response, int(response[9:12]))
        else:
            self.abort()

    def discard(self) -> None:
        """Drop a request that never started (queued behind a closing response, or rejected)."""
        if self.state == DONE:
            return
        self._drop_upstream()
        self.state = DONE
        self.pool.in_flight -= 1

    def abort(self) -> None:
        """Cut both sides (drain deadline, idle timeout, client gone, broken upstream mid-response)."""
        if self.state == DONE:
            return
        self._drop_upstream()
        self.client_close = True
        self._finish(0, aborted=True)

    def _end_tunnel(self) -> None:
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.close()
        self.client_close = True
        self._finish(101)

    def _finish(self, status: int, aborted: bool = False) -> None:
        if self.state == DONE:
            return
        self.state = DONE
        self.status = status
        ep = self.endpoint
        if ep is not None:
            ep.in_flight -= 1
            self.endpoint = None
        self.pool.in_flight -= 1
        self.client.exchange_finished(self, aborted)
