"""The RouteTable: the immutable snapshot every request reads exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.control.api import Routes
from proxy.pool import Pool


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Which pool each listener serves. Only the Switch builds one; a flip swaps the reference.

    `word` is the shared route word this table was built from (`proxy.routeword`), 0 in a process
    that owns its routes: each request compares it with its DataPlane's `route_word`."""

    active: Pool
    preview: Pool | None
    generation: int
    word: int = 0

    def names(self) -> Routes:
        return Routes(self.active.name, self.preview.name if self.preview else None, self.generation)

    def routed(self) -> set[str]:
        return {self.active.name} | ({self.preview.name} if self.preview else set())
