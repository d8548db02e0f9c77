"""The DesiredState: which pools exist (their endpoints) and, per application, which of them each listener
serves (and for which Host names).

The Switch owns one, frozen: every change (a flip, a pool's endpoints, a reload) builds the next one
and hands it to the mode's one apply callback: the in-process data plane (`apply_to`), the workers
(the supervisor pushes the pools, then stores the route word) or the fleet (etcd, then each proxy
applies what it reads back). It has one serialised form, `to_json`, for the worker channel and etcd.

Health verdicts and counters are not desired state: they are observed, and travel on their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from proxy.config import DEFAULT_APP, Config, split_pool_key
from proxy.control.api import NotFoundError, Routes
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.pool import PoolSpec


@dataclass(frozen=True, slots=True)
class AppRoutes:
    """One application's routes (pool keys, `proxy.config.pool_key`), the Host names it answers for, and its
    generation: each application flips on its own."""

    hosts: tuple[str, ...]
    active: str
    preview: str | None
    generation: int

    def routed(self) -> set[str]:
        return {self.active} | ({self.preview} if self.preview else set())

    def routes(self) -> Routes:
        """As the control interface names them: the application's own pool names."""
        return Routes(
            split_pool_key(self.active)[1],
            split_pool_key(self.preview)[1] if self.preview else None,
            self.generation,
        )


@dataclass(frozen=True, slots=True)
class DesiredState:
    pools: Mapping[str, PoolSpec]  # by key: `name` for the default application's, `app/name` for another's
    apps: Mapping[str, AppRoutes]
    version: int = 1  # moves with every change, whatever it is: what the fleet acknowledges

    @classmethod
    def from_config(cls, config: Config) -> DesiredState:
        pools = {
            pc.name: PoolSpec(tuple(_address(h, p) for h, p in pc.endpoints), pc.balancer, pc.labels)
            for pc in config.pools
        }
        apps = {a.name: AppRoutes(a.hosts, a.active, a.preview, 1) for a in config.apps}
        return cls(MappingProxyType(pools), MappingProxyType(apps))

    def app(self, name: str) -> AppRoutes:
        """The application `name`; NotFoundError (404) names the ones there are."""
        app = self.apps.get(name)
        if app is None:
            if name == DEFAULT_APP:
                raise NotFoundError(
                    f"this proxy has no default application (no top-level pools and routes); "
                    f"address one of its applications: /api/v1/apps/{{app}}/... ({', '.join(self.apps)})"
                )
            raise NotFoundError(f"unknown application {name!r} (applications: {', '.join(self.apps)})")
        return app

    def routes(self, app: str = DEFAULT_APP) -> Routes:
        return self.app(app).routes()

    def routed(self) -> set[str]:
        """Every pool some application's route names."""
        return {key for app in self.apps.values() for key in app.routed()}

    def with_routes(self, app: str, active: str, preview: str | None, generation: int | None = None) -> DesiredState:
        """`app`'s routes changed: its generation moves (the next one unless given)."""
        current = self.apps[app]
        routes = replace(
            current,
            active=active,
            preview=preview,
            generation=current.generation + 1 if generation is None else generation,
        )
        return replace(self, apps=MappingProxyType({**self.apps, app: routes}), version=self.version + 1)

    def with_pool(self, name: str, spec: PoolSpec) -> DesiredState:
        return replace(self, pools=MappingProxyType({**self.pools, name: spec}), version=self.version + 1)

    def without_pool(self, name: str) -> DesiredState:
        pools = MappingProxyType({n: s for n, s in self.pools.items() if n != name})
        return replace(self, pools=pools, version=self.version + 1)

    def with_pools(self, pools: Mapping[str, PoolSpec]) -> DesiredState:
        return replace(self, pools=MappingProxyType(dict(pools)), version=self.version + 1)

    def with_apps(self, apps: Mapping[str, AppRoutes]) -> DesiredState:
        return replace(self, apps=MappingProxyType(dict(apps)), version=self.version + 1)

    def with_version(self, version: int) -> DesiredState:
        return replace(self, version=version)

    # -- the one serialised form (worker channel, etcd, hot upgrade) -------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "pools": {
                name: {"endpoints": list(spec.endpoints)}
                | ({"balancer": spec.balancer} if spec.balancer else {})
                | ({"labels": dict(spec.labels)} if spec.labels else {})
                for name, spec in self.pools.items()
            },
            "apps": {
                name: {"hosts": list(a.hosts), "active": a.active, "preview": a.preview, "generation": a.generation}
                for name, a in self.apps.items()
            },
            "version": self.version,
        }

    def encode(self) -> bytes:
        """Canonical bytes (sorted keys): equal states encode equally."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DesiredState:
        pools = {
            name: PoolSpec(
                tuple(spec["endpoints"]), spec.get("balancer"), tuple(sorted(spec.get("labels", {}).items()))
            )
            for name, spec in data["pools"].items()
        }
        if "apps" not in data:
            # A single-application state, as proxies before applications wrote it (etcd, a hot upgrade from one).
            routes = data["routes"]
            generation = int(routes["generation"])
            apps = {DEFAULT_APP: AppRoutes((), routes["active"], routes.get("preview"), generation)}
            return cls(MappingProxyType(pools), MappingProxyType(apps), generation)
        apps = {
            name: AppRoutes(tuple(a.get("hosts", ())), a["active"], a.get("preview"), int(a["generation"]))
            for name, a in data["apps"].items()
        }
        return cls(MappingProxyType(pools), MappingProxyType(apps), int(data.get("version", 1)))


def apply_to(dp: DataPlane, state: DesiredState) -> None:
    """The in-process apply callback: the data plane's pools become the state's, then its applications
    (Host names) and their routes (when they moved, through the one place a RouteTable is built)."""
    dp.set_pools(state.pools)
    dp.set_apps({name: (app.hosts, app.active, app.preview, app.generation) for name, app in state.apps.items()})
    for name, app in state.apps.items():
        served = dp.apps[name]
        routes = served.routes
        active = dp.pools[app.active]
        preview = dp.pools[app.preview] if app.preview else None
        if routes.generation != app.generation or routes.active is not active or routes.preview is not preview:
            dp.route(served, active, preview, app.generation)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
