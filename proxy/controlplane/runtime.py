"""The runtime socket (`admin.socket`): flips and reads over a local Unix socket, one line per command.

HAProxy's runtime API is the model: a stream socket whose file mode is its access control (0600: the
proxy's user), a command per line, an answer per command. It is there for what must be quick on a busy
machine, the flip: through the admin API's HTTP a flip costs the supervisor about four times the CPU of
the change itself (aiohttp's per-connection and per-request machinery, measured in docs/benchmarks.md);
here a command is split on spaces and answered with one JSON line.

    switch ACTIVE [PREVIEW] [force] [preview=NAME] [generation=N] [app=NAME]
    routes [app=NAME]
    pools [app=NAME]
    apps
    fleet
    help

The first word after `switch` is always the pool to make active, so a pool may be named `force`; after
it, `force` is the flag (`preview=force` names such a pool as the preview). Answers are one JSON object
per line: the admin API's body for the same call (`POST /switch`, `GET /routes`, `GET /pools`,
`GET /apps`, `GET /fleet`), or `{"error": ..., "status": N}` with the status the admin API would have
given. Commands on one connection are answered in order; after the client half-closes, the proxy closes
once it has answered (so `echo 'switch green' | nc -NU PATH` works). The event log names the peer's
uid and pid (SO_PEERCRED) as the actor of a flip. `bluegreen status|switch --admin unix:PATH` speak this
protocol (`proxy.control.runtime`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from proxy.config import DEFAULT_APP
from proxy.control.api import NOT_IN_FLEET, ControlError, InvalidRequestError, NotFoundError, ProxyControl
from proxy.controlplane.events import ACTOR

MAX_LINE = 4096  # a longer line is not a command: answered with an error, the connection closed
HELP = {
    "commands": [
        "switch ACTIVE [PREVIEW] [force] [preview=NAME] [generation=N] [app=NAME]",
        "routes [app=NAME]",
        "pools [app=NAME]",
        "apps",
        "fleet",
        "help",
    ]
}
log = logging.getLogger("bluegreen.runtime")

Controls = Callable[[str], ProxyControl]


class Runtime:
    """What the socket's commands reach: the controls of each application, and the few callbacks the admin
    API has too (`guard` refuses changes during a handover; `switch_report` is the fleet's report of a flip,
    `fleet_status` its view, both None outside a fleet)."""

    def __init__(
        self,
        controls: Controls,
        *,
        apps: Callable[[], dict[str, Any]],
        guard: Callable[[], None] | None = None,
        switch_report: Callable[[], dict[str, Any] | None] | None = None,
        fleet_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.controls = controls
        self.apps = apps
        self.guard = guard
        self.switch_report = switch_report
        self.fleet_status = fleet_status

    async def execute(self, line: str) -> dict[str, Any]:
        """One command's answer (a ControlError for a refusal)."""
        words = line.split()
        command, args = words[0], words[1:]
        positional = [a for a in args if "=" not in a]
        options = dict(a.split("=", 1) for a in args if "=" in a)
        app = options.pop("app", DEFAULT_APP)
        if command == "switch":
            if not positional:
                raise InvalidRequestError("switch: name the pool to make active (switch ACTIVE [PREVIEW])")
            active, rest = positional[0], positional[1:]
            force = "force" in rest
            if force:
                rest.remove("force")
            preview = options.pop("preview", None)
            if preview is None and rest:
                preview = rest.pop(0)
            generation = options.pop("generation", None)
            _no_more(command, rest, options)
            if generation is not None and not (generation.isascii() and generation.isdigit()):
                raise InvalidRequestError(f"generation={generation}: expected a non-negative integer")
            if self.guard is not None:
                self.guard()
            routes = await self.controls(app).switch(
                active, preview, force=force, generation=int(generation) if generation is not None else None
            )
            body = routes.to_json()
            if self.switch_report is not None and (report := self.switch_report()) is not None:
                body["fleet"] = report
            return body
        if command == "routes":
            _no_more(command, positional, options)
            return (await self.controls(app).routes()).to_json()
        if command == "pools":
            _no_more(command, positional, options)
            return (await self.controls(app).status()).to_json()
        if command == "fleet":
            _no_more(command, positional, options if app == DEFAULT_APP else {"app": app, **options})
            if self.fleet_status is None:
                raise NotFoundError(NOT_IN_FLEET)
            return self.fleet_status()
        if command == "apps":
            _no_more(command, positional, options if app == DEFAULT_APP else {"app": app, **options})
            return {"apps": self.apps()}
        if command == "help":
            return HELP
        raise InvalidRequestError(f"unknown command {command!r} (commands: switch, routes, pools, apps, fleet, help)")


def _no_more(command: str, positional: list[str], options: dict[str, str]) -> None:
    extra = positional + [f"{k}={v}" for k, v in options.items()]
    if extra:
        raise InvalidRequestError(f"{command}: unexpected argument(s): {' '.join(extra)}")


class RuntimeProtocol(asyncio.Protocol):
    """One client of the runtime socket: lines in, one JSON line out per command, in order."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.lines: deque[bytes] = deque()
        self.task: asyncio.Task[None] | None = None
        self.eof = False
        self.actor: dict[str, Any] = {"via": "runtime socket"}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                self.actor = {"via": "runtime socket", "uid": uid, "pid": pid}
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (end := buffer.find(b"\n")) >= 0:
            self.lines.append(buffer[:end])
            buffer = buffer[end + 1 :]
        self.buffer = buffer
        if len(buffer) > MAX_LINE:
            self.buffer = b""
            self.lines.append(buffer)  # answered as too long, then the connection closes
            self.eof = True
        self._serve()

    def eof_received(self) -> bool:
        if self.buffer:
            self.lines.append(self.buffer)  # a last command without its newline
            self.buffer = b""
        self.eof = True
        self._serve()
        return True  # keep the write side open for the answers

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.lines.clear()

    def _serve(self) -> None:
        if self.task is None and (self.lines or self.eof):
            self.task = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        ACTOR.set(self.actor)  # this task's context: the event log says who flipped
        while self.lines and self.transport is not None:
            raw = self.lines.popleft()
            if not raw.strip():
                continue
            self.transport.write(await self._reply(raw))
        self.task = None
        if self.eof and not self.lines and self.transport is not None:
            self.transport.close()

    async def _reply(self, raw: bytes) -> bytes:
        if len(raw) > MAX_LINE:
            answer: dict[str, Any] = {"error": f"command longer than {MAX_LINE} bytes", "status": 400}
        else:
            try:
                answer = await self.runtime.execute(raw.decode("utf-8", "replace"))
            except ControlError as exc:
                answer = {"error": exc.message, "status": exc.status}
            except Exception as exc:  # a bug must not take the socket down: say so, answer, go on
                log.exception("runtime socket: %r failed", raw[:200])
                answer = {"error": f"internal error: {exc}", "status": 500}
        return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


async def serve_runtime(sock: socket.socket, runtime: Runtime) -> asyncio.AbstractServer:
    """Accept on `sock` (a bound, listening Unix socket) from now on."""
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: RuntimeProtocol(runtime), sock=sock)
