"""The Switch: the one place that changes routes and pools.

A flip checks its target (fails closed on a pool with no healthy endpoint), builds the next
RouteTable, swaps the reference and answers only when new requests are served by it. Changes are
serialised by a lock that only the control plane takes; the hot path never sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from proxy.config import Config, parse_address
from proxy.control.api import (
    ConflictError,
    EndpointStatus,
    InvalidRequestError,
    NotFoundError,
    PoolStatus,
    ProxyStatus,
    Routes,
)
from proxy.controlplane.health import HealthChecker
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.pool import Health, Pool
from proxy.dataplane.routes import RouteTable

Publisher = Callable[[], Awaitable[None]]


class Switch:
    """Owns the desired state. In-process, `dp` is the serving DataPlane; under a supervisor it is a
    shadow (no listeners) and `publish` pushes every change to the workers and waits for their acks."""

    def __init__(self, dp: DataPlane, health: HealthChecker, publish: Publisher | None = None) -> None:
        self.dp = dp
        self.health = health
        self.publish = publish
        self.switches = 0
        self.lock = asyncio.Lock()  # serialises control changes (never taken on the hot path)

    def routes(self) -> Routes:
        return self.dp.routes.names()

    def status(self) -> ProxyStatus:
        dp = self.dp
        pools = list(dp.pools.values()) + [p for p in list(dp.draining) if p.name not in dp.pools]
        return ProxyStatus(self.routes(), tuple(pool_status(p) for p in pools))

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        async with self.lock:
            dp = self.dp
            current = dp.routes
            plan = await self.plan(active, preview, force=force, generation=generation)
            if plan is None:
                return current.names()  # idempotent: nothing to change
            if dp.routes is not current:
                raise ConflictError("routes changed while checking the target; retry")
            table = RouteTable(plan[0], plan[1], current.generation + 1)
            dp.apply_routes(table)
            if self.publish is not None:
                await self.publish()
            self.switches += 1
            return table.names()

    async def plan(
        self, active: str, preview: str | None, *, force: bool, generation: int | None
    ) -> tuple[Pool, Pool | None] | None:
        """Check a flip against the routes served now: the (active, preview) pools to serve, or None when
        they already are. Refuses a stale `generation`, an unknown pool and, unless `force`, a target with
        no healthy endpoint (never-checked endpoints are probed first). Shared by the local and fleet flips."""
        current = self.dp.routes
        if generation is not None and generation != current.generation:
            raise ConflictError(f"generation {generation} is not the current one ({current.generation})")
        target = self._pool(active)
        if preview is None:
            new_preview = current.active if target is not current.active else current.preview
        else:
            new_preview = self._pool(preview)
        if target is current.active and new_preview is current.preview:
            return None
        if target is not current.active and not force:
            if not target.endpoints:
                raise ConflictError(f"pool {active!r} has no endpoints (use force to switch anyway)")
            if await self.health.verify(target) == 0:
                raise ConflictError(f"pool {active!r} has no healthy endpoint (use force to switch anyway)")
        return target, new_preview

    def deletable(self, name: str) -> Pool:
        """The pool `name` if it may be deleted: it exists and no route names it."""
        pool = self._pool(name)
        if pool.routed:
            raise ConflictError(f"pool {name!r} is named by a route; switch away from it first")
        return pool

    async def set_endpoints(self, name: str, endpoints: Sequence[str]) -> bool:
        """Create or replace a pool's endpoints; returns True when the pool was created."""
        addresses = parse_endpoints(endpoints)
        async with self.lock:
            pool, change = self.dp.set_pool(name, addresses)
            if not change:
                return False
            self.health.watch(pool)
            if self.publish is not None:
                await self.publish()
            return change == "new"

    async def delete_pool(self, name: str) -> None:
        async with self.lock:
            self.deletable(name)
            self.dp.remove_pool(name)
            self.health.unwatch(name)
            if self.publish is not None:
                await self.publish()

    async def reload(self, config: Config) -> dict[str, Any]:
        """Apply a new, already validated config: pools, routes and settings, in one step.

        Listener and admin addresses cannot move without a restart; a change to them is reported,
        not applied. Everything else changes atomically for the next request.
        """
        async with self.lock:
            dp = self.dp
            restart = [f"listeners.{r}" for r in config.listeners if config.listeners[r] != dp.config.listeners.get(r)]
            restart += (
                ["listeners.preview"] if "preview" in dp.config.listeners and "preview" not in config.listeners else []
            )
            if config.admin != dp.config.admin:
                restart.append("admin")
            changed: list[str] = []
            dp.apply_settings(config)
            for pc in config.pools:
                pool, change = dp.set_pool(pc.name, pc.endpoints, pc.balancer)
                if change:
                    changed.append(f"pools.{pc.name}" + (" (new)" if change == "new" else ""))
                self.health.watch(pool)  # its health-check settings may have changed too
            current = dp.routes
            active = dp.pools[config.active]
            preview = dp.pools[config.preview] if config.preview else None
            if active is not current.active or preview is not current.preview:
                dp.apply_routes(RouteTable(active, preview, current.generation + 1))
                self.switches += 1
                changed.append("routes")
            wanted = {pc.name for pc in config.pools}
            for name in [n for n in dp.pools if n not in wanted]:
                dp.remove_pool(name)
                self.health.unwatch(name)
                changed.append(f"pools.{name} (removed, draining)")
            if self.publish is not None:
                await self.publish()
            return {"routes": self.routes().to_json(), "changed": changed, "needs_restart": restart}

    def _pool(self, name: str) -> Pool:
        if not isinstance(name, str):
            raise InvalidRequestError("a pool name must be a string")
        pool = self.dp.pools.get(name)
        if pool is None:
            raise NotFoundError(f"unknown pool {name!r}")
        return pool


def parse_endpoints(endpoints: Sequence[object]) -> list[tuple[str, int]]:
    addresses: list[tuple[str, int]] = []
    for i, item in enumerate(endpoints):
        if not isinstance(item, str):
            raise InvalidRequestError(f"endpoints[{i}]: expected a 'host:port' string")
        try:
            address = parse_address(item)
        except ValueError as exc:
            raise InvalidRequestError(f"endpoints[{i}]: {exc}") from None
        if address in addresses:
            raise InvalidRequestError(f"endpoints[{i}]: duplicate endpoint {item!r}")
        addresses.append(address)
    return addresses


def normalize_endpoints(endpoints: Sequence[object]) -> list[str]:
    """Validated `host:port` strings, as pools print them."""
    return [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in parse_endpoints(endpoints)]


def pool_status(pool: Pool) -> PoolStatus:
    return PoolStatus(
        name=pool.name,
        endpoints=tuple(
            EndpointStatus(ep.address, ep.up and ep.health is not Health.UNHEALTHY, ep.in_flight)
            for ep in pool.endpoints
        ),
        in_flight=pool.in_flight,
        draining=pool.draining,
    )
