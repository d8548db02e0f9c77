"""The Switch: the one place that changes routes and pools.

It owns the DesiredState. A change builds the next state and hands it to the mode's one apply
callback (in-process data plane, workers, or the etcd fleet), and answers once it is served. A flip
checks its target first (fails closed on a pool with no healthy endpoint). Changes are serialised by
a lock that only the control plane takes; the hot path never sees it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from proxy.config import DEFAULT_APP, Config, ListenerConfig, label_problem, parse_address, pool_key, split_pool_key
from proxy.control.api import (
    ConflictError,
    EndpointStatus,
    InvalidRequestError,
    NotFoundError,
    PoolStatus,
    ProxyStatus,
    Routes,
)
from proxy.controlplane.events import actor, emit, emit_soon
from proxy.controlplane.health import HealthChecker
from proxy.controlplane.state import AppRoutes, DesiredState
from proxy.dataplane.pool import Health, Pool, PoolSpec

Applier = Callable[[DesiredState], Awaitable[None]]
FLIP_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
log = logging.getLogger("bluegreen.switch")


class ChangeLock(asyncio.Lock):
    """The Switch's lock, which also knows whether anyone holds it or waits for it (`busy`): a flip made
    at once (`Switch.switch_now`) must not overtake a change queued before it."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0  # holders and waiters

    async def acquire(self) -> Literal[True]:
        self.claims += 1
        try:
            return await super().acquire()
        except BaseException:  # cancelled while waiting: no longer a claim
            self.claims -= 1
            raise

    def release(self) -> None:
        super().release()
        self.claims -= 1

    @property
    def busy(self) -> bool:
        return self.claims > 0


class Switch:
    """Owns the desired state; `pools` are the live Pool objects of that state (health, status): the
    serving data plane's in one process, the supervisor's own under `--workers`.

    Calls name an application (`app`, the default one unless given) and its pools by their own names; the
    state keys pools by `proxy.config.pool_key`. One lock serialises changes of every application (a flip
    waits at most for another's acknowledgement); each application's routes have their own generation.

    `apply` makes a state served (and `pools` its shape); `apply_now`, when given, does it without waiting
    when it can (False when it cannot); `describe` reports the pools with their counters; `configure` applies
    a reload's settings.
    """

    def __init__(
        self,
        config: Config,
        pools: dict[str, Pool],
        health: HealthChecker,
        apply: Applier,
        describe: Callable[[], Iterable[PoolStatus]],
        configure: Callable[[Config], None],
        apply_now: Callable[[DesiredState], bool] | None = None,
    ) -> None:
        self.config = config
        self.state = DesiredState.from_config(config)
        self.loaded = _file_routes(config)  # the routes the config file named when last loaded, by application
        self.pools = pools
        self.health = health
        self.apply = apply
        self.apply_now = apply_now  # `apply` at once when it can (True), as a flip usually can: `switch_now`
        self.describe = describe
        self.configure = configure
        self.switches = 0
        self.flip_seconds = [0] * (len(FLIP_BOUNDS) + 1)  # how long flips took to be served (histogram)
        self.flip_seconds_sum = 0.0
        self.lock = ChangeLock()  # serialises control changes (never taken on the hot path)
        self.draining: dict[str, float] = {}  # pools unrouted, by name: since when (monotonic); `Watch` ends them

    def routes(self, app: str = DEFAULT_APP) -> Routes:
        return self.state.routes(app)

    def status(self, app: str = DEFAULT_APP) -> ProxyStatus:
        """One application's routes and pools (by their own names)."""
        routes = self.state.routes(app)
        pools = self.state.pools
        described = []
        for p in self.describe():
            owner, name = split_pool_key(p.name)
            if owner == app:
                described.append(replace(p, name=name, labels=pools[p.name].labels if p.name in pools else p.labels))
        return ProxyStatus(routes, tuple(described))

    def apps(self) -> dict[str, dict[str, Any]]:
        """Every application: its Host names and routes (`GET /api/v1/apps`)."""
        return {
            name: {"hosts": list(a.hosts), "default": not a.hosts, "routes": a.routes().to_json()}
            for name, a in self.state.apps.items()
        }

    async def adopt(self, state: DesiredState) -> None:
        """Serve `state` (lock held by the caller): apply it, then follow the pools with health checks."""
        await self.apply(state)
        self._adopted(state)

    def _adopted(self, state: DesiredState) -> None:
        """`state` is served: it is the state now; health checks and drains follow its pools and routes."""
        before = self.state
        self.state = state
        for name in before.pools.keys() - state.pools.keys():
            self.health.unwatch(name)
        for name, spec in state.pools.items():
            if before.pools.get(name) != spec and name in self.pools:
                self.health.watch(self.pools[name])  # new or reshaped: probed at once
        for name, app in state.apps.items():
            was = before.apps.get(name)
            if was is not None and (was.active, was.preview) != (app.active, app.preview):
                self.switches += 1
        for name in sorted(before.routed() - state.routed()):
            self.draining[name] = time.monotonic()
            emit(log, logging.INFO, "drain_started", f"pool {name} drains (no route names it)", pool=name)
        for name in state.routed():
            self.draining.pop(name, None)

    def record_flip(self, seconds: float) -> None:
        """A flip's time from the call to the answer (every worker, or the fleet, serving it)."""
        self.flip_seconds[bisect_left(FLIP_BOUNDS, seconds)] += 1
        self.flip_seconds_sum += seconds

    async def switch(
        self,
        active: str,
        preview: str | None = None,
        *,
        app: str = DEFAULT_APP,
        force: bool = False,
        generation: int | None = None,
    ) -> Routes:
        routes = self.switch_now(active, preview, app=app, force=force, generation=generation)
        if routes is not None:
            return routes
        started = time.monotonic()
        async with self.lock:
            current = self.state
            plan = await self.plan(app, active, preview, force=force, generation=generation)
            if plan is None:
                return current.routes(app)  # idempotent: nothing to change
            if self.state is not current:
                raise ConflictError("routes changed while checking the target; retry")
            await self.adopt(current.with_routes(app, *plan))
            self._flipped(app, current, started, force)
            return self.state.routes(app)

    def switch_now(
        self,
        active: str,
        preview: str | None = None,
        *,
        app: str = DEFAULT_APP,
        force: bool = False,
        generation: int | None = None,
    ) -> Routes | None:
        """`switch` without waiting for anything, as most flips can be. It declines (None: call `switch`) when
        another change is under way or waiting for the lock (a flip made now would overtake it), when an
        endpoint of the target was never checked (it is probed first), or when the state cannot be served
        without a message (`apply_now` says). Same checks and refusals as `switch`; one task and a loop
        turn less on the path a flip's client waits on."""
        if self.apply_now is None or self.lock.busy:
            return None
        started = time.monotonic()
        current = self.state
        plan = self._plan(app, active, preview, generation)
        if plan is None:
            return current.routes(app)
        target, new_preview = plan
        if target.name != current.app(app).active and not force:
            healthy = self.health.healthy_now(target)
            if healthy is None:
                return None
            self._check_healthy(target, healthy)
        state = current.with_routes(app, target.name, new_preview)
        if not self.apply_now(state):
            return None
        self._adopted(state)
        self._flipped(app, current, started, force)
        return state.routes(app)

    def _flipped(self, app: str, before: DesiredState, started: float, force: bool) -> None:
        seconds = time.monotonic() - started
        self.record_flip(seconds)
        self.log_flip(app, before.routes(app), self.state.routes(app), seconds, force=force)

    def log_flip(self, app: str, before: Routes, after: Routes, seconds: float, **more: Any) -> None:
        """The audit record of a flip: who, which application, from what to what, the generation, how long
        until it was served. Written a moment after the answer (`emit_soon`), stamped with this time."""
        where = "" if app == DEFAULT_APP else f" of {app}"
        emit_soon(
            log,
            logging.INFO,
            "flip",
            f"flip{where}: active {before.active} -> {after.active}, preview {before.preview} -> {after.preview} "
            f"(generation {after.generation}, served in {seconds * 1000:.1f} ms)",
            app=app,
            active_from=before.active,
            active_to=after.active,
            preview_from=before.preview,
            preview_to=after.preview,
            generation=after.generation,
            ack_ms=round(seconds * 1000, 3),
            **more,
            **actor(),
        )

    async def plan(
        self, app: str, active: str, preview: str | None, *, force: bool, generation: int | None
    ) -> tuple[str, str | None] | None:
        """Check a flip of `app` against the routes served now: the (active, preview) pool keys to serve, or
        None when they already are. Refuses an unknown application, a stale `generation`, an unknown pool and,
        unless `force`, a target with no healthy endpoint (never-checked endpoints are probed first). Shared
        by the local and fleet flips."""
        plan = self._plan(app, active, preview, generation)
        if plan is None:
            return None
        target, new_preview = plan
        if target.name != self.state.app(app).active and not force:
            await self.check_target(target)
        return target.name, new_preview

    def _plan(
        self, app: str, active: str, preview: str | None, generation: int | None
    ) -> tuple[Pool, str | None] | None:
        """`plan` but the target's health: the target pool and the preview's key, None when already served."""
        current = self.state.app(app)
        if generation is not None and generation != current.generation:
            raise ConflictError(f"generation {generation} is not the current one ({current.generation})")
        target = self._pool(app, active)
        if preview is None:
            new_preview = current.active if target.name != current.active else current.preview
        else:
            new_preview = self._pool(app, preview).name
        if target.name == current.active and new_preview == current.preview:
            return None
        return target, new_preview

    async def check_target(self, target: Pool) -> None:
        """Fail closed: a pool that is to go live needs a healthy endpoint."""
        self._check_healthy(target, await self.health.verify(target) if target.endpoints else 0)

    @staticmethod
    def _check_healthy(target: Pool, healthy: int) -> None:
        if not target.endpoints:
            raise ConflictError(f"pool {target.name!r} has no endpoints (use force to switch anyway)")
        if healthy == 0:
            raise ConflictError(f"pool {target.name!r} has no healthy endpoint (use force to switch anyway)")

    def deletable(self, name: str, app: str = DEFAULT_APP) -> Pool:
        """The pool `name` of `app` if it may be deleted: it exists and no route names it."""
        pool = self._pool(app, name)
        if pool.name in self.state.routed():
            raise ConflictError(f"pool {name!r} is named by a route; switch away from it first")
        return pool

    async def set_endpoints(
        self, name: str, endpoints: Sequence[str], labels: object = None, *, app: str = DEFAULT_APP
    ) -> bool:
        """Create or replace a pool's endpoints (and labels; None keeps them); True when the pool was created."""
        key = self.pool_key(app, name)
        addresses = tuple(normalize_endpoints(endpoints))
        wanted = None if labels is None else check_labels(labels)
        async with self.lock:
            current = self.state.pools.get(key)
            kept = current.labels if current else ()
            spec = PoolSpec(addresses, current.balancer if current else None, kept if wanted is None else wanted)
            if current is not None and current == spec:
                return False
            await self.adopt(self.state.with_pool(key, spec))
            return current is None

    async def delete_pool(self, name: str, *, app: str = DEFAULT_APP) -> None:
        async with self.lock:
            pool = self.deletable(name, app)
            await self.adopt(self.state.without_pool(pool.name))

    def pool_key(self, app: str, name: object) -> str:
        """The key of pool `name` of application `app` (which must exist: 404 else); 400 for a bad name."""
        self.state.app(app)
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("a pool name must be a non-empty string")
        if "/" in name:
            raise InvalidRequestError(f"a pool name has no '/': {name!r}")
        return pool_key(app, name)

    async def reload(self, config: Config) -> dict[str, Any]:
        """Apply a new, already validated config: pools and settings, and routes only if the file's changed.

        The routes set through the admin API are the live state: a reload keeps them unless the file names
        other routes than when it was last loaded, and then they go through a flip's checks (a pool with no
        healthy endpoint refuses the reload, and nothing changes). A pool a live route names cannot be
        removed. Listener and admin addresses cannot move without a restart: reported, not applied.
        """
        started = time.monotonic()
        async with self.lock:
            old = self.config

            def moved(new: ListenerConfig, before: ListenerConfig | None) -> bool:
                """A new address or TLS switched on or off needs a restart; new certificates do not."""
                return before is None or new.address() != before.address() or (new.tls is None) != (before.tls is None)

            restart = [f"listeners.{r}" for r in config.listeners if moved(config.listeners[r], old.listeners.get(r))]
            restart += ["listeners.preview"] if "preview" in old.listeners and "preview" not in config.listeners else []
            if config.admin != old.admin:
                restart.append("admin")  # address, token, TLS or runtime socket: bound once, at start
            current = self.state
            wanted = DesiredState.from_config(config)
            loaded = _file_routes(config)
            apps: dict[str, AppRoutes] = {}
            flips: list[str] = []  # applications whose routes the file changed since it was last loaded
            for name, file_routes in loaded.items():
                hosts = wanted.apps[name].hosts
                now = current.apps.get(name)
                if now is None:
                    apps[name] = AppRoutes(hosts, *file_routes, 1)  # a new application starts on its file's routes
                    continue
                routes = (now.active, now.preview)
                flip = file_routes != self.loaded.get(name) and file_routes != routes
                if flip:
                    routes = file_routes
                    flips.append(name)
                for key in {r for r in routes if r}:
                    if key not in wanted.pools:
                        pool_name = split_pool_key(key)[1]
                        live = f"{routes[0]}/{routes[1]}"
                        raise ConflictError(
                            f"pool {pool_name!r}{_of(name)} is live (routes {live}); the reload removes it"
                        )
                apps[name] = AppRoutes(hosts, routes[0], routes[1], now.generation + 1 if flip else now.generation)
            state = wanted.with_apps(apps).with_version(current.version + 1)
            targets = [apps[name].active for name in flips if apps[name].active != current.apps[name].active]
            if targets:
                # The checks of a flip, on the pools as the file shapes them: pools first (the live ones kept),
                # then the probes; a target with no healthy endpoint refuses the reload and nothing changes.
                await self.adopt(current.with_pools({**current.pools, **wanted.pools}))
                try:
                    for key in targets:
                        await self.check_target(self.pools[key])
                except ConflictError:
                    await self.adopt(current)
                    raise
            self.configure(config)
            self.config = config
            self.loaded = loaded
            changed = [f"apps.{name} (new)" for name in apps if name not in current.apps]
            changed += [
                f"pools.{name}" + (" (new)" if name not in current.pools else "")
                for name, spec in state.pools.items()
                if current.pools.get(name) != spec and split_pool_key(name)[0] in current.apps
            ]
            changed += [
                f"apps.{name}.hosts"
                for name, a in apps.items()
                if name in current.apps and a.hosts != current.apps[name].hosts
            ]
            for name in flips:
                before, after = current.apps[name], apps[name]
                changed.append("routes" if name == DEFAULT_APP else f"apps.{name}.routes")
                log.warning(
                    "reload flips routes%s: active %s -> %s, preview %s -> %s (generation %d)",
                    _of(name),
                    before.active,
                    after.active,
                    before.preview,
                    after.preview,
                    after.generation,
                )
            changed += [f"pools.{name} (removed, draining)" for name in current.pools if name not in state.pools]
            changed += [f"apps.{name} (removed)" for name in current.apps if name not in apps]
            await self.adopt(state)
            for pool in self.pools.values():
                self.health.watch(pool)  # its health-check settings may have changed too
            seconds = time.monotonic() - started
            default_before = current.apps.get(DEFAULT_APP)
            default_after = apps.get(DEFAULT_APP)
            emit(
                log,
                logging.INFO,
                "reload",
                f"reload: {', '.join(changed) or 'nothing'} changed (served in {seconds * 1000:.1f} ms)",
                changed=changed,
                needs_restart=restart,
                flipped=flips,
                active_from=default_before.active if default_before else None,
                active_to=default_after.active if default_after else None,
                preview_from=default_before.preview if default_before else None,
                preview_to=default_after.preview if default_after else None,
                generation=default_after.generation if default_after else None,
                ack_ms=round(seconds * 1000, 3),
                **actor(),
            )
            return {
                "routes": state.routes().to_json() if DEFAULT_APP in apps else None,
                "apps": {name: a.routes().to_json() for name, a in apps.items()},
                "changed": changed,
                "needs_restart": restart,
            }

    def _pool(self, app: str, name: object) -> Pool:
        key = self.pool_key(app, name)
        pool = self.pools.get(key)
        if pool is None or key not in self.state.pools:
            where = "" if app == DEFAULT_APP else f" in application {app!r}"
            raise NotFoundError(f"unknown pool {name!r}{where}")
        return pool


def _of(app: str) -> str:
    return "" if app == DEFAULT_APP else f" of application {app!r}"


def _file_routes(config: Config) -> dict[str, tuple[str, str | None]]:
    return {a.name: (a.active, a.preview) for a in config.apps}


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


def check_labels(labels: object) -> tuple[tuple[str, str], ...]:
    """A pool's labels from an admin call: refused (400) unless each is a Prometheus label of the pool's own."""
    if not isinstance(labels, Mapping):
        raise InvalidRequestError("labels: expected an object of strings")
    for name, value in labels.items():
        problem = label_problem(name, value)
        if problem:
            raise InvalidRequestError(f"labels: {problem}")
    return tuple(sorted(labels.items()))


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
