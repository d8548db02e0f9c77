"""The RouteTable: the immutable snapshot every request reads exactly once, and the route word.

The route word names a table in 64 bits: generation (high 32) | active pool slot (16) | preview pool
slot (16, 0 = none). A request compares its DataPlane's word with the table's (one 8-byte load); under
`--workers` the word is shared with the supervisor (`proxy.workers.routeword`), so a flip is one store.
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


NO_SLOT = 0
MAX_SLOT = 0xFFFF


def encode(generation: int, active: int, preview: int) -> int:
    return (generation & 0xFFFFFFFF) << 32 | active << 16 | preview


def decode(word: int) -> tuple[int, int, int]:
    """(generation, active slot, preview slot)."""
    return word >> 32, (word >> 16) & 0xFFFF, word & 0xFFFF


def local_word() -> memoryview:
    """A private word: a single process keeps the same hot path without sharing anything."""
    return memoryview(bytearray(8)).cast("Q")
