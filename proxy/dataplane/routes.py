"""The RouteTable: the immutable snapshot every request reads exactly once, and the route word; the App
whose table it is, and the HostMap that picks an App by the request's Host.

The route word names a table in 64 bits: generation (high 32) | active pool slot (16) | preview pool
slot (16, 0 = none). Each application has its own word (its `index` in the page of words). A request
compares its application's word with its table's (one 8-byte load); under `--workers` the words are shared
with the supervisor (`proxy.workers.routeword`), so a flip is one store.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.control.api import Routes
from proxy.dataplane.pool import Pool


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Which pool each listener serves. Only the Switch builds one; a flip swaps the reference.

    `word` is the shared route word this table was built from (`proxy.workers.routeword`), 0 in a process
    that owns its routes: each request compares it with its DataPlane's `route_word`."""

    active: Pool
    preview: Pool | None
    generation: int
    word: int = 0

    def names(self) -> Routes:
        return Routes(self.active.name, self.preview.name if self.preview else None, self.generation)

    def routed(self) -> set[str]:
        return {self.active.name} | ({self.preview.name} if self.preview else set())


class App:
    """An application: its current RouteTable (swapped whole by a flip) and the index of its route word."""

    __slots__ = ("index", "log_name", "name", "routes")

    def __init__(self, name: str, index: int, routes: RouteTable) -> None:
        self.name = name
        self.log_name = name.encode()  # as the access log writes it, encoded once
        self.index = index
        self.routes = routes


class HostMap:
    """Which App a Host names: exact names, then one-label wildcards (`*.example.com`), then the default
    application (None: a Host no application names is answered 404). Replaced whole when applications
    change; a connection caches its last answer together with the map it came from."""

    __slots__ = ("default", "exact", "wildcard")

    def __init__(self, exact: dict[str, App], wildcard: dict[str, App], default: App | None) -> None:
        self.exact = exact
        self.wildcard = wildcard  # by the suffix after the first label: ".example.com"
        self.default = default

    def find(self, host: bytes) -> App | None:
        """The App for a Host value (`name[:port]`, any case; a bracketed IPv6 literal names no application)."""
        name = host.decode("latin-1").lower()
        if name.startswith("["):
            return self.default
        colon = name.rfind(":")
        if colon >= 0:
            name = name[:colon]
        name = name.rstrip(".")
        app = self.exact.get(name)
        if app is not None:
            return app
        dot = name.find(".")
        if dot > 0:
            app = self.wildcard.get(name[dot:])
            if app is not None:
                return app
        return self.default


NO_SLOT = 0
MAX_SLOT = 0xFFFF
MAX_APPS = 512  # route words in a page (4 KiB)


def encode(generation: int, active: int, preview: int) -> int:
    return (generation & 0xFFFFFFFF) << 32 | active << 16 | preview


def decode(word: int) -> tuple[int, int, int]:
    """(generation, active slot, preview slot)."""
    return word >> 32, (word >> 16) & 0xFFFF, word & 0xFFFF


def local_word() -> memoryview:
    """Private words (all zero, as its tables' are): a single process keeps the same hot path, sharing nothing."""
    return memoryview(bytearray(8 * MAX_APPS)).cast("Q")
