"""Port ownership: the supervisor binds every listening socket once and hands it to its workers.

No SO_REUSEPORT: a second proxy (or any other program) on a taken port fails to bind instead of
silently sharing the live port's traffic. A failed bind is one line (`PortError`) naming the
address, the config key and, for a taken port, its owner when /proc tells (a process of the same
user: its pid and command line).
"""

from __future__ import annotations

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
