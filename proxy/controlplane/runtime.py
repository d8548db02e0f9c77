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
from typing import Any, Protocol

from proxy.config import DEFAULT_APP
from proxy.control.api import NOT_IN_FLEET, ControlError, InvalidRequestError, NotFoundError, ProxyControl, Routes
from proxy.controlplane.events import ACTOR

MAX_LINE = 4096  # a longer line is not a command: answered with an error, the connection closed
READ_SIZE = 65536
MAX_PENDING = 64  # commands read and not yet answered: past this, reading waits for the answers
MAX_UNSENT = 1 << 20  # bytes of answers the client has not read: past this, reading waits for the client
ACCEPT_BATCH = 16
ACCEPT_RETRY = 1.0  # seconds before accepting again after running out of descriptors (asyncio's delay)
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


class SwitchNow(Protocol):
    """A flip made without waiting, or None when it has to wait (`Switch.switch_now`)."""

    def __call__(
        self, active: str, preview: str | None, *, app: str, force: bool, generation: int | None
    ) -> Routes | None: ...


class Runtime:
    """What the socket's commands reach: the controls of each application, and the few callbacks the admin
    API has too (`guard` refuses changes during a handover; `switch_report` is the fleet's report of a flip,
    `fleet_status` its view, both None outside a fleet). `switch_now`, when given, makes a flip at once when
    it can (`answer_now`)."""

    def __init__(
        self,
        controls: Controls,
        *,
        apps: Callable[[], dict[str, Any]],
        guard: Callable[[], None] | None = None,
        switch_report: Callable[[], dict[str, Any] | None] | None = None,
        fleet_status: Callable[[], dict[str, Any]] | None = None,
        switch_now: SwitchNow | None = None,
    ) -> None:
        self.controls = controls
        self.apps = apps
        self.guard = guard
        self.switch_report = switch_report
        self.fleet_status = fleet_status
        self.switch_now = switch_now

    def execute_now(self, line: str) -> dict[str, Any] | None:
        """`execute` for a flip that needs nothing awaited (the usual one): its answer, or None when the
        command must go through `execute` (another command, or a flip that has to wait)."""
        if self.switch_now is None:
            return None
        words = line.split()
        if words[0] != "switch":
            return None
        app, active, preview, force, generation = self._switch_args(words[1:])
        routes = self.switch_now(active, preview, app=app, force=force, generation=generation)
        return None if routes is None else self._switched(routes)

    def _switched(self, routes: Routes) -> dict[str, Any]:
        """A flip's answer: the routes, and the fleet's report of it in a fleet."""
        body = routes.to_json()
        if self.switch_report is not None and (report := self.switch_report()) is not None:
            body["fleet"] = report
        return body

    def _switch_args(self, args: list[str]) -> tuple[str, str, str | None, bool, int | None]:
        """A switch command's (app, active, preview, force, generation); refused during a handover."""
        positional = [a for a in args if "=" not in a]
        options = dict(a.split("=", 1) for a in args if "=" in a)
        app = options.pop("app", DEFAULT_APP)
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
        _no_more("switch", rest, options)
        if generation is not None and not (generation.isascii() and generation.isdigit()):
            raise InvalidRequestError(f"generation={generation}: expected a non-negative integer")
        if self.guard is not None:
            self.guard()
        return app, active, preview, force, int(generation) if generation is not None else None

    async def execute(self, line: str) -> dict[str, Any]:
        """One command's answer (a ControlError for a refusal)."""
        words = line.split()
        command, args = words[0], words[1:]
        if command == "switch":
            app, active, preview, force, generation = self._switch_args(args)
            return self._switched(await self.controls(app).switch(active, preview, force=force, generation=generation))
        positional = [a for a in args if "=" not in a]
        options = dict(a.split("=", 1) for a in args if "=" in a)
        app = options.pop("app", DEFAULT_APP)
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


class RuntimeServer:
    """Accepts on the runtime socket and serves each connection with plain non-blocking socket calls on the
    loop: a flip's command is usually read in the wakeup that accepts it (no epoll registration at all),
    and the connection is closed as soon as its last answer is out, so a one-shot client (`socat`, `nc -N`)
    gets its EOF right behind the answer. Through uvloop's transports the close came a loop iteration later,
    after whatever else was ready; under full load that put the flip's p50 at 1.73 ms against 1.32 ms this
    way (docs/benchmarks.md)."""

    def __init__(self, sock: socket.socket, runtime: Runtime) -> None:
        self.sock = sock
        self.runtime = runtime
        self.loop = asyncio.get_running_loop()
        self.serving = False
        self.tasks = 0  # commands answered by a task now, on any connection: none may be overtaken
        self._retry: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        self._listen()

    def _listen(self) -> None:
        self._retry = None
        self.loop.add_reader(self.sock.fileno(), self._accept)
        self.serving = True

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):  # a burst of clients is taken in one wakeup; the rest wakes the loop again
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors or memory: the clients wait in the backlog meanwhile
                log.warning("runtime socket: cannot accept (%s); retrying in %.0f s", exc, ACCEPT_RETRY)
                self.loop.remove_reader(self.sock.fileno())
                self._retry = self.loop.call_later(ACCEPT_RETRY, self._listen)
                return
            RuntimeConnection(conn, self).start()

    def close(self) -> None:
        """Stop accepting (answers in progress still go out); the socket itself stays its owner's."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.serving:
            self.serving = False
            self.loop.remove_reader(self.sock.fileno())


class RuntimeConnection:
    """One client: command lines in, one JSON line out per command, in order. Reads stop while answers pile
    up (a client that sends without reading is not buffered without bound); once the client has half-closed
    and every answer is out, the connection closes."""

    def __init__(self, sock: socket.socket, server: RuntimeServer) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.server = server
        self.runtime = server.runtime
        self.loop = server.loop
        self.buffer = b""  # the start of a line not yet ended
        self.lines: deque[bytes] = deque()
        self.out = bytearray()  # answers the kernel has not taken yet
        self.task: asyncio.Task[None] | None = None  # the command being answered
        self.eof = False  # the client half-closed (or sent a line too long to be a command)
        self.reading = False  # registered with the loop for reads
        self.closed = False
        self.actor: dict[str, Any] = {"via": "runtime socket"}

    def start(self) -> None:
        self.sock.setblocking(False)
        try:
            pid, uid, _ = struct.unpack("3i", self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            self.actor = {"via": "runtime socket", "uid": uid, "pid": pid}
        except OSError:
            pass
        self._read()  # the client has usually written its command by now: no wait for another wakeup

    def _read(self) -> None:
        """Take what the client sent until the kernel has no more (so a half-close right behind a command is
        seen now, and the answer goes out with the EOF), then answer."""
        while not self.eof and len(self.lines) < MAX_PENDING:
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # reset by the client
                self._close()
                return
            if not data:
                self.eof = True
                if self.buffer:
                    self.lines.append(self.buffer)  # a last command without its newline
                    self.buffer = b""
                break
            self._received(data)
        self._serve()

    def _received(self, data: bytes) -> None:
        *lines, buffer = (self.buffer + data).split(b"\n")  # one pass: a read may hold thousands of commands
        self.lines.extend(lines)
        self.buffer = buffer
        if len(buffer) > MAX_LINE:
            self.buffer = b""
            self.lines.append(buffer)  # answered as too long, then the connection closes
            self.eof = True

    def _serve(self) -> None:
        """Answer the next command unless one is under way, then follow the flow: read while answers keep up,
        close when everything is answered after the client's EOF."""
        if self.closed:
            return
        while self.task is None and self.lines:
            raw = self.lines.popleft()
            if not raw.strip():
                continue
            answer = self._answer_now(raw) if self.server.tasks == 0 else None
            if answer is None:
                self.server.tasks += 1
                self.task = self.loop.create_task(self._answer(raw))
            elif not self._write(answer):
                return
        want_reads = not self.eof and len(self.lines) < MAX_PENDING and len(self.out) < MAX_UNSENT
        if want_reads != self.reading:
            if want_reads:
                self.loop.add_reader(self.fd, self._read)
            else:
                self.loop.remove_reader(self.fd)
            self.reading = want_reads
        if self.eof and self.task is None and not self.lines and not self.out:
            self._close()

    async def _answer(self, raw: bytes) -> None:
        ACTOR.set(self.actor)  # this task's context: the event log says who flipped
        try:
            answer = await self._reply(raw)
        finally:
            self.task = None
            self.server.tasks -= 1
        if not self.closed:  # a client that went away mid-command: its change is made, its answer dropped
            self._write(answer)
            self._serve()

    def _answer_now(self, raw: bytes) -> bytes | None:
        """The answer to a flip made at once (`Runtime.execute_now`), or None: then a task answers. Only
        when no task is answering a command (of any client): commands are served in the order they came."""
        if len(raw) > MAX_LINE:
            return None
        token = ACTOR.set(self.actor)  # the flip's event record names who flipped
        try:
            answer = self.runtime.execute_now(raw.decode("utf-8", "replace"))
        except Exception as exc:
            answer = _failure(raw, exc)
        finally:
            ACTOR.reset(token)
        return None if answer is None else _line(answer)

    async def _reply(self, raw: bytes) -> bytes:
        if len(raw) > MAX_LINE:
            answer: dict[str, Any] = {"error": f"command longer than {MAX_LINE} bytes", "status": 400}
        else:
            try:
                answer = await self.runtime.execute(raw.decode("utf-8", "replace"))
            except Exception as exc:
                answer = _failure(raw, exc)
        return _line(answer)

    def _write(self, data: bytes) -> bool:
        """Send `data` or keep what the kernel does not take yet; False when the client is gone (closed)."""
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the client is gone
                self._close()
                return False
            if sent == len(data):
                return True
            data = data[sent:]
            self.loop.add_writer(self.fd, self._writable)
        self.out += data
        return True

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close()
            return
        del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.fd)
            self._serve()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reading:
            self.loop.remove_reader(self.fd)
        if self.out:
            self.loop.remove_writer(self.fd)
        self.lines.clear()
        self.out.clear()
        self.sock.close()


def _failure(raw: bytes, exc: Exception) -> dict[str, Any]:
    """The answer to a command that raised: a refusal's status, or a bug's 500 (logged; the socket goes on)."""
    if isinstance(exc, ControlError):
        return {"error": exc.message, "status": exc.status}
    log.exception("runtime socket: %r failed", raw[:200], exc_info=exc)
    return {"error": f"internal error: {exc}", "status": 500}


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, separators=(",", ":")).encode() + b"\n"


def serve_runtime(sock: socket.socket, runtime: Runtime) -> RuntimeServer:
    """Accept on `sock` (a bound, listening Unix socket) from now on, in the running loop."""
    return RuntimeServer(sock, runtime)
