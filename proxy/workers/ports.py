"""Port ownership: the supervisor binds every listening socket once and hands it to its workers.

No SO_REUSEPORT: a second proxy (or any other program) on a taken port fails to bind instead of
silently sharing the live port's traffic. A failed bind is one line (`PortError`) naming the
address, the config key and, for a taken port, its owner when /proc tells (a process of the same
user: its pid and command line).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

BACKLOG = 2048


class PortError(OSError):
    """A listening socket could not be made: the message is the one line to print."""


def bind_listener(key: str, host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A listening TCP socket on `host:port` (the config key `key` names it in errors); inheritable, so workers
    get it with pass_fds. With `listen=False` it is only bound (its server listens when it starts)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortError(f"{key}: cannot resolve host {host!r} ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # a restart binds past TIME_WAIT, not past a listener
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise PortError(f"{key}: {describe_bind_error(exc, host, port)}") from None
    sock.set_inheritable(True)
    return sock


def bind_unix(key: str, path: str, *, backlog: int = BACKLOG) -> socket.socket:
    """A listening Unix stream socket at `path`, mode 0600 (its file mode is its access control). A path left
    by a proxy that died is taken over (nobody answers there); one where a process answers is refused. Bound
    under a temporary name, restricted, then renamed into place (HAProxy's way): the path never exists with
    wider rights, and no umask (process-wide, shared with threads) is changed."""
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            pass  # stale: replaced by the rename below
        else:
            raise PortError(f"{key}: another process answers on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{path}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        sock.bind(staging)
        os.chmod(staging, 0o600)
        os.rename(staging, path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise PortError(f"{key}: cannot bind {path}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def bound_at(sock: socket.socket, path: str) -> bool:
    """Whether a Unix socket made by `bind_unix` was made for `path` (it is bound under the staging name)."""
    name = sock.getsockname()
    return isinstance(name, str) and (name == path or (name.startswith(path + ".") and name.endswith(".tmp")))


def unlink_if_ours(path: str, inode: int) -> None:
    """Remove a Unix socket's path unless another process has bound it since (a successor's, by inode)."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def describe_bind_error(exc: OSError, host: str, port: int) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        owner = port_owner(port)
        return f"port {port} ({where}) is in use" + (f" by {owner}" if owner else "")
    if exc.errno == errno.EACCES:
        return f"permission denied binding {where} (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot bind {where}: no local interface has this address"
    return f"cannot bind {where}: {exc.strerror or exc}"


def port_owner(port: int) -> str | None:
    """Who listens on TCP `port`: "pid N (command line)" when a process this user may inspect holds the socket,
    else None. Read from /proc/net/tcp{,6} (the socket's inode) and /proc/*/fd (who holds that inode)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _holds(entry.name, targets):
                return f"pid {entry.name} ({_command(entry.name)})"
    return None


def _holds(pid: str, targets: set[str]) -> bool:
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        return True
                except OSError:
                    continue
    except OSError:
        pass
    return False


def _command(pid: str) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    text = " ".join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words))
    return text if len(text) <= 100 else text[:97] + "..."
