"""The event log: what the control plane did and saw, as structured log records with levels.

Every event is a stdlib `logging` record of a `bluegreen.*` logger with two extras: `event` (its kind:
`flip`, `reload`, `endpoint_health`, `endpoint_ejected`, `drain_started`, `drain_finished`, `drain_cut`,
`worker_exited`, `worker_restarted`, `fleet_member_joined`, `fleet_member_dropped`) and `fields` (a
dict). `configure` (the CLI's `--log-level`, `--log-format json|text`) writes them to stderr, as one JSON
object per line or as text; whatever the level, the last `RING_SIZE` records of level INFO and above
are kept in memory for `GET /api/v1/events` (the audit trail of flips).

Who made a change is the admin call's: `admin.py` sets `ACTOR` (the client address and whether a token
was given) for the request it serves, and the Switch, which runs in that request's task, reads it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from types import TracebackType
from typing import Any

RING_SIZE = 1000
DEFER = 0.001  # seconds an `emit_soon` record waits
LEVELS = ("debug", "info", "warning", "error")
ACTOR: ContextVar[dict[str, Any] | None] = ContextVar("bluegreen_actor", default=None)
ROOT = "bluegreen"


def actor() -> dict[str, Any]:
    """Who asked for the change under way: an admin client (`client`, `token`: "token" or "none" until tokens
    are named), or `via` what (`SIGHUP`, `internal`)."""
    return dict(ACTOR.get() or {"via": "internal"})


def emit(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """One event: `message` for people, `fields` for machines."""
    logger.log(level, message, extra={"event": event, "fields": fields})


class Deferred:
    """Records written a moment after the call that made them (`emit_soon`), in order, each stamped with the
    time of its call. For the record of a change whose client waits for the answer: that client is usually
    woken on this process's core, so a record written at once (logging's record, the formatters, the write to
    stderr: as long as a flip itself) delays its read of the answer. Whoever reads the ring (`recent`) and the
    process on its way out `flush` them first, so none is missed or lost."""

    def __init__(self) -> None:
        self.records: list[tuple[logging.Logger, int, str, str, dict[str, Any], float]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def add(self, logger: logging.Logger, level: int, event: str, message: str, fields: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a timer armed on another loop (gone, in tests) would never fire
            self.flush()
        self.records.append((logger, level, event, message, fields, time.time()))
        if self.timer is None:
            self.timer, self.loop = loop.call_later(DEFER, self.flush), loop

    def flush_here(self) -> None:
        """`flush`, when called in the loop the records wait on (another thread leaves them to its timer)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            return
        if here is self.loop:
            self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop = None
        records, self.records = self.records, []
        for logger, level, event, message, fields, created in records:
            if logger.isEnabledFor(level):
                record = logger.makeRecord(
                    logger.name, level, "(deferred)", 0, message, (), None, extra={"event": event, "fields": fields}
                )
                record.created, record.msecs = created, int(created % 1 * 1000)  # the call's time, not this one
                logger.handle(record)


DEFERRED = Deferred()


def emit_soon(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """`emit`, written `DEFER` seconds later with the time of now (`Deferred`). Call it from the loop."""
    DEFERRED.add(logger, level, event, message, fields)


def flush() -> None:
    """Write the deferred records now."""
    DEFERRED.flush()


def as_dict(record: logging.LogRecord) -> dict[str, Any]:
    created = record.created
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"
    item: dict[str, Any] = {
        "time": stamp,
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": getattr(record, "event", "log"),
        "message": record.getMessage(),
    }
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        item.update({k: v for k, v in fields.items() if k not in item})
    if record.exc_info:
        item["exception"] = logging.Formatter().formatException(record.exc_info)
    return item


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, message, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(as_dict(record), default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`time level logger: message` and, for an event, `[event k=v ...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        event = getattr(record, "event", None)
        if event is None:
            return text
        fields = getattr(record, "fields", None) or {}
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return f"{text} [{event}{' ' + pairs if pairs else ''}]"


class EventRing(logging.Handler):
    """The recent records, as dicts, with a sequence number (newest last)."""

    def __init__(self, size: int = RING_SIZE) -> None:
        super().__init__(logging.INFO)
        self.items: deque[dict[str, Any]] = deque(maxlen=size)
        self.seq = 0
        self._guard = threading.Lock()  # records may come from any thread (never from the data plane)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            item = as_dict(record)
        except Exception:  # a record whose message cannot be formatted: logging's own policy
            self.handleError(record)
            return
        with self._guard:
            self.seq += 1
            item["seq"] = self.seq
            self.items.append(item)

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        DEFERRED.flush_here()  # the records held back a moment (`emit_soon`) are events already: read them too
        with self._guard:
            items = list(self.items)
        return items[-limit:] if limit else items


RING = EventRing()


def install_ring() -> EventRing:
    """Keep INFO and above of every `bluegreen.*` logger in `RING` (idempotent)."""
    root = logging.getLogger(ROOT)
    if RING not in root.handlers:
        root.addHandler(RING)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    return RING


SETTINGS = {"level": "info", "format": "text"}  # as configured: the supervisor hands them to its workers


def configure(level: str = "info", fmt: str = "text", *, ring: bool = True) -> None:
    """The proxy's event log on stderr: `level` and above, as JSON lines or text (the CLI's flags). Whatever
    else would reach stderr as a traceback (asyncio's unhandled task errors, an uncaught exception in any
    thread) goes through the same handler, so a JSON log stays one JSON object per line. `ring=False` (a
    worker: no admin API reads it) keeps no records in memory."""
    stream = logging.StreamHandler(sys.stderr)
    stream.bluegreen_stream = True  # type: ignore[attr-defined]
    stream.setLevel(getattr(logging, level.upper()))
    stream.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in (ROOT, "asyncio"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "bluegreen_stream", False)]:
            logger.removeHandler(handler)
        logger.addHandler(stream)
        logger.propagate = False  # one line per record, whatever the root logger does
    root = logging.getLogger(ROOT)
    root.setLevel(min(logging.INFO, getattr(logging, level.upper())) if ring else getattr(logging, level.upper()))
    SETTINGS.update(level=level, format=fmt)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    if ring:
        install_ring()


_crash = logging.getLogger(f"{ROOT}.crash")


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    _crash.critical("uncaught %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb), extra={"event": "crash"})


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    _crash.critical(
        "uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        name,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"event": "crash", "fields": {"thread": name}},
    )
