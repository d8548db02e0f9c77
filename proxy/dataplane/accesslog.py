"""The access log (`access_log: {path: FILE|stdout, format: json|combined}`): one line per finished request.

Nothing of it runs on the request path while it is off: the DataPlane then builds plain `Exchange`s. While
it is on it builds `LoggedExchange`s, which note the few things an `Exchange` does not keep (start and end
time, bytes sent, the endpoint that served it, the route generation) and, when they finish, format their
line (one `%` of a template: no logging call, no lock) onto the log's list, so the exchange is freed at
once. The lines are joined in batches, at the end of the loop iteration in which `BATCH` lines gathered (a
`call_soon`, as `proxy.dataplane.outbox` sends writes) or at the data plane's next tick, and handed as one
chunk to a writer thread, so the loop never waits for the disk. The writer appends whole lines (O_APPEND; to
a pipe or terminal in pieces of at most PIPE_BUF, at line ends), so several workers can share one file. When
the disk stalls, chunks queue up to `MAX_PENDING` bytes; past that the loop drops lines and counts them
(`bluegreen_access_log_dropped_total`) rather than wait. `reopen` (SIGUSR1, after logrotate moved the file)
makes the writer open the path again.

`time` is when the response ended (UTC, milliseconds); `duration_ms` runs from the end of the request
head to the end of the response; `bytes_in` counts the request body (and what a tunnel carried upstream),
`bytes_out` every byte sent to the client for the request (status line, head, body as framed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import stat
import sys
import threading
import time
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Final

from proxy.config import AccessLogConfig, Config, ConfigError
from proxy.dataplane.exchange import DONE, HEAD_SENT, Exchange

log = logging.getLogger("bluegreen.accesslog")

if TYPE_CHECKING:
    from proxy.dataplane.client import ClientConnection
    from proxy.dataplane.plane import DataPlane
    from proxy.dataplane.pool import Endpoint, Pool

MAX_PENDING = 16 * 1024 * 1024  # bytes of formatted lines waiting for the writer before lines are dropped
BATCH = 128  # lines joined at the end of the loop iteration that reached this many (else at the tick)
FLUSH_INTERVAL = 0.1  # seconds between the writer thread's rounds (a reopen or close wakes it at once)
PIPE_BUF = 4096  # a write to a pipe of at most this many bytes is never interleaved with another's
DEFAULT_APP: Final = b"default"  # the application of a request that named none (never resolved: not logged)

# Bytes a JSON string (or a quoted field of the combined format) carries as they are: printable ASCII but
# `"` and `\`. `_unsafe(value)` maps every other byte to another one, so the copy differs when something
# needs escaping (rare): a table lookup per byte and a memcmp. A regex search costs about 150 instructions
# per byte here, `value.translate(None, safe)` builds its deletion table on every call.
_UNSAFE: Final = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_MARK: Final = bytes(c if 0x20 <= c < 0x7F and c not in b'"\\' else (1 if c != 1 else 2) for c in range(256))


def _unsafe(value: bytes) -> bool:
    return value.translate(_MARK) != value


class RequestIds:
    """X-Request-Id values for requests that came without a trusted one: a random prefix per process and a
    counter, in hex (`3f9ac1d2e4b5a6c7-1a`): unique across workers and restarts, and one format per request
    (no uuid4, no os.urandom per request). `_forward` reads `template` and `count` directly."""

    __slots__ = ("count", "template")

    def __init__(self) -> None:
        self.template = os.urandom(8).hex().encode() + b"-%x"
        self.count = 0  # the last one given (a native int under mypyc: no `next()` of an iterator per request)


class LoggedExchange(Exchange):
    """An Exchange that notes what its access-log line needs; built instead of one while the log is on."""

    __slots__ = (
        "aborted",
        "app",
        "began",
        "bytes_out",
        "ended",
        "final_status",
        "generation",
        "served_by",
        "tunnel_in",
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
        Exchange.__init__(
            self,
            dp,
            client,
            pool,
            head,
            method,
            has_body,
            chunked_request,
            expect_continue,
            upgrade,
            keep_alive,
            request_id,
        )
        self.began = perf_counter()  # not the loop's clock: uvloop's steps in whole milliseconds
        app = client.app  # `_request` has just resolved it and read its snapshot (same call, same loop)
        self.app = app.log_name if app is not None else DEFAULT_APP
        self.generation = app.routes.generation if app is not None else 0
        self.bytes_out = 0
        self.tunnel_in = 0
        self.served_by: Endpoint | None = None
        self.ended = 0.0
        self.final_status = 0
        self.aborted = False

    def flush(self) -> None:
        # Exchange.flush, counting what it writes.
        out = self.out
        if out:
            client = self.client
            for part in out:
                self.bytes_out += len(part)
            if len(out) == 1:
                client.write(out[0])
            else:
                client.write_parts(out)
            out.clear()
            self.head_index = -1
            client.deadline = self.dp.now + self.dp.idle_timeout

    def _finish_with(self, response: bytes, status: int) -> None:
        self.bytes_out += len(response)
        Exchange._finish_with(self, response, status)

    def upstream_upgraded(self, rest: bytes) -> None:
        self.bytes_out += len(rest)
        Exchange.upstream_upgraded(self, rest)

    def tunnel_to_client(self, data: bytes) -> None:
        self.bytes_out += len(data)
        Exchange.tunnel_to_client(self, data)

    def tunnel_to_upstream(self, data: bytes) -> None:
        self.tunnel_in += len(data)
        Exchange.tunnel_to_upstream(self, data)

    def _finish(self, status: int, aborted: bool = False) -> None:
        if self.state != DONE:
            self.served_by = self.endpoint
            self.ended = perf_counter()
            # What the client was sent: the status of a response cut after its head, 0 when nothing went out.
            self.final_status = status if not aborted else (self.status if self.state == HEAD_SENT else 0)
            self.aborted = aborted
            log = self.dp.access_log
            if log is not None:
                log.add(self)
        Exchange._finish(self, status, aborted)


def _json_escaped(value: bytes) -> bytes:
    """`value` inside a JSON string (bytes that are not printable ASCII decoded as UTF-8 and escaped)."""
    return json.dumps(value.decode("utf-8", "backslashreplace"))[1:-1].encode()


def _escaped(value: bytes) -> bytes:
    """`value` for a quoted field of the combined format: `"`, `\\` and non-printable bytes as \\xHH (nginx)."""
    if not _unsafe(value):
        return value
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m.group()[0], value)


def _field(low: bytes, head: bytes, name: bytes) -> bytes:
    """A request field's value from the head sent upstream (`low` is its lowercased copy), or b"-"."""
    at = low.find(b"\r\n" + name + b":")
    if at < 0:
        return b"-"
    start = at + len(name) + 3
    return head[start : head.find(b"\r\n", start)].strip() or b"-"


# A JSON line: {"time":"...Z","client":..,"method":..,"target":..,"status":N,"bytes_in":N,"bytes_out":N,
# "duration_ms":N.NNN, then the pool's `log_json` (app, listener, pool: one piece per pool and listener),
# "endpoint":..,"generation":N,"request_id":..,"aborted":B} (`AccessLog._json`).
_THREE_DIGITS: Final = tuple(b"%03d" % n for n in range(1000))
_COMBINED: Final = b'%s - - [%s] "%s %s %s" %d %d "%s" "%s" "%s" "%s" "%s" %d %s %.3fms\n'


class AccessLog:
    """Records of finished requests, formatted per loop iteration and written by a thread of its own."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: AccessLogConfig) -> None:
        self.loop = loop
        self.config = config
        self.lines: list[bytes] = []  # formatted, waiting for the batch's join
        self.json = config.format == "json"
        self.offset = time.time() - perf_counter()  # wall clock minus perf_counter's; renewed at every flush
        self.stalled = False  # the writer is MAX_PENDING behind (renewed at every flush): lines are dropped
        self.dropped = 0  # lines dropped on the loop (the writer was MAX_PENDING behind)
        self.queued = 0  # bytes handed to the writer (written by the loop thread only)
        self.chunks: deque[bytes] = deque()
        self._second = -1
        self._stamp = b""
        self.writer = _Writer(self, config.path)
        self.writer.start()

    # -- on the loop -------------------------------------------------------------------------

    def add(self, ex: LoggedExchange) -> None:
        """Format the finished exchange's line now, so that nothing keeps the exchange alive (held until the
        batch, exchanges would outlive young-generation collections and cost the GC their traversals)."""
        if self.stalled:
            self.dropped += 1  # the disk stalls: drop and count, never make the loop wait
            return
        lines = self.lines
        lines.append(self._json(ex, self.offset) if self.json else self._combined(ex, self.offset))
        if len(lines) == BATCH:
            self.loop.call_soon(self.flush)  # after this iteration's events; else the next tick flushes

    def flush(self) -> None:
        lines = self.lines
        self.offset = time.time() - perf_counter()
        self.stalled = self.queued - self.writer.written > MAX_PENDING or self.writer.closed
        if not lines:
            return
        self.lines = []
        data = b"".join(lines)
        self.queued += len(data)
        self.chunks.append(data)

    def _stamp_for(self, second: int, combined: bool) -> bytes:
        if second != self._second:
            self._second = second
            fmt = "%d/%b/%Y:%H:%M:%S +0000" if combined else "%Y-%m-%dT%H:%M:%S"
            self._stamp = time.strftime(fmt, time.gmtime(second)).encode()
        return self._stamp

    def _json(self, ex: LoggedExchange, offset: float) -> bytes:
        ended = ex.ended
        wall = ended + offset
        second = int(wall)
        stamp = self._stamp if second == self._second else self._stamp_for(second, False)
        head = ex.head
        method = ex.method
        start = len(method) + 1
        target = head[start : head.find(b" ", start)]
        if _unsafe(target):
            target = _json_escaped(target)
        request_id = ex.request_id
        if _unsafe(request_id):
            request_id = _json_escaped(request_id)
        ep = ex.served_by
        # Joined from pieces: `bytes % tuple` parses its template and formats a float for every line (7k of
        # the 12k instructions a line cost under mypyc); ints go through str(), 0-999 through a table.
        millis = int((wall - second) * 1000)
        duration = int((ended - ex.began) * 1_000_000 + 0.5)  # µs: the milliseconds to 3 decimals
        return b"".join(
            (
                b'{"time":"',
                stamp,
                b".",
                _THREE_DIGITS[millis if millis < 1000 else 999],
                b'Z","client":"',
                ex.client.peer,
                b'","method":"',
                method,
                b'","target":"',
                target,
                b'","status":',
                str(ex.final_status).encode(),
                b',"bytes_in":',
                str(ex.request_bytes + ex.tunnel_in).encode(),
                b',"bytes_out":',
                str(ex.bytes_out).encode(),
                b',"duration_ms":',
                str(duration // 1000).encode(),
                b".",
                _THREE_DIGITS[duration % 1000],
                b",",
                ex.pool.log_json[ex.listener],
                b',"endpoint":',
                ep.log_json if ep is not None else b"null",
                b',"generation":',
                str(ex.generation).encode(),
                b',"request_id":"',
                request_id,
                b'","aborted":true}\n' if ex.aborted else b'","aborted":false}\n',
            )
        )

    def _combined(self, ex: LoggedExchange, offset: float) -> bytes:
        """Apache's combined format, then (as Traefik does) app, pool, endpoint, generation, request id and
        duration."""
        head = ex.head
        low = head.lower()
        method = ex.method
        ep = ex.served_by
        return _COMBINED % (
            ex.client.peer,
            self._stamp_for(int(ex.ended + offset), True),
            method,
            _escaped(head[len(method) + 1 : head.find(b" ", len(method) + 1)]),
            b"HTTP/1.1" if ex.client.http11 else b"HTTP/1.0",
            ex.final_status,
            ex.bytes_out,
            _escaped(_field(low, head, b"referer")),
            _escaped(_field(low, head, b"user-agent")),
            ex.app,
            ex.pool.log_name,
            ep.log_address if ep is not None else b"-",
            ex.generation,
            _escaped(ex.request_id),
            (ex.ended - ex.began) * 1000,
        )

    def reopen(self) -> None:
        """Open the path again (SIGUSR1 after a rotation): lines from now on go to the new file."""
        self.writer.request(reopen=True)

    @property
    def lost(self) -> int:
        """Lines dropped: on the loop (writer behind) and by the writer (write errors)."""
        return self.dropped + self.writer.dropped

    def close_nowait(self) -> None:
        """Write what is left and stop the writer (it finishes on its own thread)."""
        self.flush()
        self.writer.request(stop=True)

    async def close(self) -> None:
        self.close_nowait()
        await asyncio.to_thread(self.writer.join, 5.0)


class _Writer(threading.Thread):
    """Writes the log's chunks in order; the only code that touches the file."""

    def __init__(self, log: AccessLog, path: str) -> None:
        super().__init__(name="bluegreen-access-log", daemon=True)
        self.log = log
        self.path = path
        self.fd = _open(path)
        self.whole = _regular(self.fd)  # a regular file takes a whole chunk per write (O_APPEND)
        self.written = 0  # bytes done with (written or dropped): by this thread only
        self.dropped = 0  # lines lost to write errors
        self.closed = False
        self._wake = threading.Event()
        self._reopening = False
        self._stopping = False

    def request(self, *, reopen: bool = False, stop: bool = False) -> None:
        self._reopening = self._reopening or reopen
        self._stopping = self._stopping or stop
        self._wake.set()

    def run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            if self._reopening:
                self._reopening = False
                self._reopen_file()
            self._drain()
            if self._stopping:
                self._drain()
                self.closed = True
                if self.path != "stdout":
                    os.close(self.fd)
                return

    def _reopen_file(self) -> None:
        if self.path == "stdout":
            return
        try:
            fd = _open(self.path)
        except OSError as exc:
            _report("cannot reopen the access log %s: %s", self.path, exc)
            return
        old, self.fd = self.fd, fd
        self.whole = _regular(fd)
        os.close(old)

    def _drain(self) -> None:
        # Everything queued in one write: this thread gets the GIL seldom while the loop is busy (every
        # switch interval at worst), so it must not need it once per chunk.
        chunks = self.log.chunks
        while chunks:
            parts = [chunks.popleft() for _ in range(len(chunks))]
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            try:
                self._write(data)
            except OSError as exc:
                self.dropped += data.count(b"\n")
                _report("access log %s: %s (%d lines dropped)", self.path, exc, data.count(b"\n"))
            self.written += len(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            piece = view
            if not self.whole and len(view) > PIPE_BUF:
                end = bytes(view[:PIPE_BUF]).rfind(b"\n") + 1
                piece = view[: end or len(view)]  # a line longer than PIPE_BUF goes whole
            try:
                done = os.write(self.fd, piece)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)  # a non-blocking pipe that is full: this thread waits
                continue
            view = view[done:]


def _report(message: str, path: str, exc: OSError, *more: object) -> None:
    """An access-log failure, on the event log (the process's stderr, in its `--log-format`): the log's
    writer thread, never the request path."""
    log.error(message, path, exc, *more, extra={"event": "access_log_error", "fields": {"path": path}})


def _open(path: str) -> int:
    if path == "stdout":
        return sys.stdout.fileno()
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def check_access_log(config: Config) -> None:
    """At start: the access log's file can be opened for appending (ConfigError with file, key path, reason)."""
    alc = config.access_log
    if alc is None or alc.path == "stdout":
        return
    try:
        os.close(_open(alc.path))
    except OSError as exc:
        raise ConfigError(
            config.source, "access_log.path", f"cannot open {alc.path} for appending: {exc.strerror}"
        ) from None
