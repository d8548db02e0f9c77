"""Hot upgrade: a new proxy process takes the listening sockets and the live state from the running one.

The running supervisor listens on a Unix socket (`socket_path`: derived from the admin address, so
`--upgrade` with the same config finds it). The handover, newline-delimited JSON, one exchange at a
time:

```
new -> old   {"op": "hello", "protocol": 1, "version": ..., "pid": ...}
old -> new   {"op": "refused", "reason": ...}                        incompatible protocol, or busy
          or {"op": "sockets", "protocol": 1, "roles": [...], ...}    + the listening sockets (SCM_RIGHTS)
             {"op": "state", "state": ..., "loaded": ..., "health": ..., "fleet": ...}
             (from here on the old one refuses changes with 503 + Retry-After: nothing it would apply
             could reach the new one)
new -> old   {"op": "serving", "pid": ...}                           its workers accept on the sockets
          or {"op": "failed", "reason": ...} / the connection closes   the old one goes on serving
old -> new   {"op": "stopped"}      its workers stopped accepting and shut their idle connections down;
                                    in-flight requests, streams and tunnels finish there (drain timeout)
new -> old   {"op": "adopt", "state": ...}     each change the new one makes while the old one drains
old -> new   {"op": "adopted", "generation": N}
```

Only after `stopped` does the new one accept changes (until then 503 + Retry-After too); from then on
until the old one exits, every change is applied by both before it is answered: a keep-alive
connection still open on the old one (its next request is answered with `Connection: close`) is
routed by the same routes as the new one's. Only a peer of the same user
is served (SO_PEERCRED). `PROTOCOL` moves whenever a message changes incompatibly; a peer speaking
another one is refused with both versions named.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

from proxy.config import Config
from proxy.workers.ports import bind_unix, unlink_if_ours

PROTOCOL = 1
MAX_FDS = 16
MAX_MESSAGE = 2**24


class UpgradeError(Exception):
    """The handover failed: the message is the one line to print."""


def proxy_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bluegreen")
    except metadata.PackageNotFoundError:
        return "unknown"


def socket_path(config: Config) -> str:
    """Where a running proxy with this config listens for its successor: `$XDG_RUNTIME_DIR` (else the temp
    dir) / `bluegreen-HOST-PORT.sock` for the admin address; with admin port 0, keyed by the config file."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    admin = config.admin
    if admin.port:
        name = f"bluegreen-{admin.host}-{admin.port}.sock"
    else:
        digest = hashlib.sha256(os.path.abspath(config.source).encode()).hexdigest()[:16]
        name = f"bluegreen-config-{digest}.sock"
    return os.path.join(base, name.replace("/", "_"))


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Link:
    """One end of the handover connection on the running loop: JSON lines, file descriptors beside them."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self._buffer = b""
        self.fds: list[int] = []  # received with the messages read so far

    async def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = encode(message)
        if fds:
            # A fresh connection's buffer takes a small message at once; the descriptors ride its first byte.
            sent = socket.send_fds(self.sock, [data], fds)
            data = data[sent:]
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed."""
        while b"\n" not in self._buffer:
            await self._readable()
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 65536, MAX_FDS)
            except BlockingIOError:
                continue
            if not data:
                return None
            self.fds += fds
            self._buffer += data
            if len(self._buffer) > MAX_MESSAGE:
                raise UpgradeError("handover message too long")
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise UpgradeError("handover message is not an object")
        return message

    async def _readable(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_reader(self.sock.fileno(), wake)
        try:
            await ready
        finally:
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []
        self.sock.close()


@dataclass
class Handover:
    """What the new process received: the sockets by role (listeners and "admin"), the live state, and the
    link on which it reports `serving` and hears `stopped`."""

    link: Link
    peer_pid: int
    peer_version: str
    sockets: dict[str, socket.socket]
    state: dict[str, Any]

    async def serving(self, wait: float) -> None:
        """Tell the old process this one serves; wait (up to `wait` s) until it stopped accepting."""
        await self.link.send({"op": "serving", "pid": os.getpid()})
        async with asyncio.timeout(wait):
            reply = await self.link.receive()
        if reply is None or reply.get("op") != "stopped":
            raise UpgradeError(f"the old proxy (pid {self.peer_pid}) did not confirm it stopped accepting: {reply}")

    async def failed(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            await self.link.send({"op": "failed", "reason": reason})
        self.abandon()

    def abandon(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.link.close()


async def take_over(path: str, wait: float = 30.0) -> Handover:
    """Connect to the running proxy at `path` and receive its sockets and state (UpgradeError: one line)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, path)
    except OSError as exc:
        sock.close()
        raise UpgradeError(f"no running proxy to upgrade at {path} ({exc.strerror or exc})") from None
    if peer_uid(sock) != os.getuid():
        sock.close()
        raise UpgradeError(f"{path} belongs to another user: refusing its sockets")
    link = Link(sock)
    try:
        async with asyncio.timeout(wait):
            await link.send({"op": "hello", "protocol": PROTOCOL, "version": proxy_version(), "pid": os.getpid()})
            first = await link.receive()
            if first is None:
                raise UpgradeError("the running proxy closed the handover connection")
            if first.get("op") == "refused":
                raise UpgradeError(f"the running proxy refused the upgrade: {first.get('reason')}")
            if first.get("protocol") != PROTOCOL:
                raise UpgradeError(
                    f"the running proxy (pid {first.get('pid')}, version {first.get('version')}) speaks handover "
                    f"protocol {first.get('protocol')}; this one (version {proxy_version()}) speaks {PROTOCOL}"
                )
            roles = list(first.get("roles", []))
            if len(link.fds) != len(roles):
                raise UpgradeError(f"expected {len(roles)} sockets from the running proxy, received {len(link.fds)}")
            sockets = {role: socket.socket(fileno=fd) for role, fd in zip(roles, link.fds, strict=True)}
            link.fds = []
            state = await link.receive()
            if state is None or state.get("op") != "state":
                for s in sockets.values():
                    s.close()
                raise UpgradeError("the running proxy closed the handover before sending its state")
    except TimeoutError:
        link.close()
        raise UpgradeError(f"the running proxy did not hand over within {wait:g} s") from None
    except (UpgradeError, OSError, ValueError) as exc:
        link.close()
        if isinstance(exc, UpgradeError):
            raise
        raise UpgradeError(f"handover failed: {exc}") from None
    return Handover(link, int(first.get("pid", 0)), str(first.get("version")), sockets, state)


class UpgradeListener:
    """The running proxy's end: accept one successor at a time and run `handler(link, hello)` for it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self._inode = 0
        self._task: asyncio.Task[None] | None = None
        self._links: set[asyncio.Task[None]] = set()  # one task per connected peer (referenced while it runs)
        self.busy = False

    def bind(self) -> None:
        """Bind `path`, taking it over from a proxy that died without removing it (nobody answers there)."""
        sock = bind_unix("upgrade socket", self.path, backlog=4)
        sock.set_inheritable(False)
        sock.setblocking(False)
        self.sock = sock
        self._inode = os.stat(self.path).st_ino

    def serve(self, handler: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept(handler))

    async def _accept(self, handler: Any) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            if peer_uid(conn) != os.getuid():
                conn.close()
                continue
            task = loop.create_task(self._one(Link(conn), handler))
            self._links.add(task)
            task.add_done_callback(self._links.discard)

    async def _one(self, link: Link, handler: Any) -> None:
        try:
            async with asyncio.timeout(10):
                hello = await link.receive()
            if hello is None:
                return
            if hello.get("op") != "hello" or hello.get("protocol") != PROTOCOL:
                reason = (
                    f"this proxy (pid {os.getpid()}, version {proxy_version()}) speaks handover protocol {PROTOCOL}; "
                    f"the new one (pid {hello.get('pid')}, version {hello.get('version')}) speaks "
                    f"{hello.get('protocol')}"
                )
                print(f"bluegreen proxy: upgrade refused: {reason}", flush=True)
                await link.send({"op": "refused", "reason": reason, "protocol": PROTOCOL})
                return
            if self.busy:
                await link.send({"op": "refused", "reason": "another upgrade is in progress", "protocol": PROTOCOL})
                return
            self.busy = True
            try:
                await handler(link, hello)
            finally:
                self.busy = False
        except (OSError, ValueError, TimeoutError, UpgradeError) as exc:
            print(f"bluegreen proxy: upgrade connection failed: {exc}", flush=True)
        finally:
            link.close()

    def close(self, *, unlink: bool) -> None:
        """Stop listening; remove the path only when asked and while it is still ours (not a successor's)."""
        if self._task is not None:
            self._task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if unlink:
            unlink_if_ours(self.path, self._inode)
