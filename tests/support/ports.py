"""Loopback ports for servers that another process binds: a proxy, etcd, an upstream in its own process.

An in-process server binds port 0 and reads its port back: no race, no allocator needed. A child process
must be told its port in advance, so the port is free when it is handed out and bound a moment later by
the child; meanwhile two things could take it: this run handing it out again, and another process. So:

- ports come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where port-0
  binds and outgoing connections (this run's and every other process's on the machine) never land;
- every port handed out is remembered for the rest of the run (a process-wide set), and in a registry
  file that concurrent test runs on the machine share: a port that another live run holds is skipped
  (entries of runs that ended are dropped, so nothing accumulates);
- a candidate is handed out only if it can be bound right now (no listener, nothing in TIME_WAIT on it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["free_port"]

REGISTRY = Path(tempfile.gettempdir()) / "bluegreen-test-ports"
LOWEST = 15000  # well above the fixed ports the demo and the sample config use (8080-8092, 2379)

_handed_out: set[int] = set()
_lock = threading.Lock()  # executor threads may ask too


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no SO_REUSEADDR: TIME_WAIT counts as taken
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _registry() -> Iterator[dict[int, int]]:
    """The ports live test runs hold (port -> pid), locked for the duration; changes are written back."""
    with open(REGISTRY, "a+", encoding="ascii") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        held: dict[int, int] = {}
        for line in fh.read().splitlines():
            with contextlib.suppress(ValueError):
                port, pid = map(int, line.split())
                if pid == os.getpid() or _alive(pid):
                    held[port] = pid
        yield held
        fh.seek(0)
        fh.truncate()
        fh.write("".join(f"{port} {pid}\n" for port, pid in held.items()))


def free_port() -> int:
    """A loopback TCP port nothing listens on, never handed out before in this run nor held by another run."""
    high = _ephemeral_low()
    if high - LOWEST < 1000:  # an unusual ephemeral range: let the kernel choose (and still never repeat)
        return _kernel_port()
    with _lock, _registry() as held:
        start = random.randrange(LOWEST, high)
        for offset in range(high - LOWEST):
            port = LOWEST + (start - LOWEST + offset) % (high - LOWEST)
            if port in _handed_out or port in held or not _bindable(port):
                continue
            _handed_out.add(port)
            held[port] = os.getpid()
            return port
    raise RuntimeError(f"no free loopback port in {LOWEST}-{high - 1}")


def _kernel_port() -> int:
    with _lock:
        for _ in range(100):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("the kernel keeps handing out ports already used in this run")
