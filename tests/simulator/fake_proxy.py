"""An in-memory ProxyControl, faithful to the contract in proxy/control/api.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.control.api import (
    ConflictError,
    EndpointStatus,
    NotFoundError,
    PoolStatus,
    ProxyStatus,
    Routes,
)


class FakeProxy:
    def __init__(self, pools: dict[str, list[str]] | None = None, active: str = "blue", preview: str = "green") -> None:
        self.pools: dict[str, list[str]] = pools if pools is not None else {"blue": [], "green": []}
        self.unhealthy: set[str] = set()
        self.labels: dict[str, dict[str, str]] = {}
        self._routes = Routes(active, preview, 1)
        self.calls: list[tuple[str, ...]] = []
        self.history: list[Routes] = [self._routes]

    async def status(self) -> ProxyStatus:
        pools = tuple(
            PoolStatus(
                name,
                tuple(EndpointStatus(a, a not in self.unhealthy, 0) for a in endpoints),
                0,
                name not in (self._routes.active, self._routes.preview),
                tuple(sorted(self.labels.get(name, {}).items())),
            )
            for name, endpoints in self.pools.items()
        )
        return ProxyStatus(self._routes, pools)

    async def routes(self) -> Routes:
        return self._routes

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        self.calls.append(("set_endpoints", pool, *endpoints))
        self.pools[pool] = list(endpoints)
        if labels is not None:
            self.labels[pool] = dict(labels)

    async def delete_pool(self, pool: str) -> None:
        if pool not in self.pools:
            raise NotFoundError(f"unknown pool {pool!r}")
        if pool in (self._routes.active, self._routes.preview):
            raise ConflictError(f"pool {pool!r} is routed")
        del self.pools[pool]
        self.labels.pop(pool, None)
        self.calls.append(("delete_pool", pool))

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        self.calls.append(("switch", active, preview or ""))
        for pool in (active, preview):
            if pool is not None and pool not in self.pools:
                raise NotFoundError(f"unknown pool {pool!r}")
        if generation is not None and generation != self._routes.generation:
            raise ConflictError(f"generation {generation} is not current ({self._routes.generation})")
        healthy = [a for a in self.pools[active] if a not in self.unhealthy]
        if not healthy and not force:
            raise ConflictError(f"pool {active!r} has no healthy endpoint")
        new_preview = preview if preview is not None else self._routes.active
        if (active, new_preview) == (self._routes.active, self._routes.preview):
            return self._routes
        self._routes = Routes(active, new_preview, self._routes.generation + 1)
        self.history.append(self._routes)
        return self._routes

    def routes_now(self) -> tuple[str, str | None]:
        return (self._routes.active, self._routes.preview)

    def serving(self, listener: str = "active") -> list[str]:
        """The endpoints a request to `listener` could reach now."""
        pool = self._routes.active if listener == "active" else self._routes.preview
        return sorted(self.pools.get(pool or "", []))
