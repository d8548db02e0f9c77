"""The DesiredState: which pools exist (their endpoints) and which of them each listener serves.

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

from proxy.config import Config
from proxy.control.api import Routes
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.pool import PoolSpec


@dataclass(frozen=True, slots=True)
class DesiredState:
    pools: Mapping[str, PoolSpec]
    active: str
    preview: str | None
    generation: int

    @classmethod
    def from_config(cls, config: Config, generation: int = 1) -> DesiredState:
        pools = {
            pc.name: PoolSpec(tuple(_address(h, p) for h, p in pc.endpoints), pc.balancer, pc.labels)
            for pc in config.pools
        }
        return cls(MappingProxyType(pools), config.active, config.preview, generation)

    def routes(self) -> Routes:
        return Routes(self.active, self.preview, self.generation)

    def routed(self) -> set[str]:
        return {self.active} | ({self.preview} if self.preview else set())

    def with_routes(self, active: str, preview: str | None, generation: int | None = None) -> DesiredState:
        """Routes changed: the generation moves (the next one unless given)."""
        return replace(
            self, active=active, preview=preview, generation=self.generation + 1 if generation is None else generation
        )

    def with_pool(self, name: str, spec: PoolSpec) -> DesiredState:
        return replace(self, pools=MappingProxyType({**self.pools, name: spec}))

    def without_pool(self, name: str) -> DesiredState:
        return replace(self, pools=MappingProxyType({n: s for n, s in self.pools.items() if n != name}))

    def with_pools(self, pools: Mapping[str, PoolSpec]) -> DesiredState:
        return replace(self, pools=MappingProxyType(dict(pools)))

    # -- the one serialised form (worker channel, etcd) -----------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "pools": {
                name: {"endpoints": list(spec.endpoints)}
                | ({"balancer": spec.balancer} if spec.balancer else {})
                | ({"labels": dict(spec.labels)} if spec.labels else {})
                for name, spec in self.pools.items()
            },
            "routes": {"active": self.active, "preview": self.preview, "generation": self.generation},
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
        routes = data["routes"]
        return cls(MappingProxyType(pools), routes["active"], routes.get("preview"), int(routes["generation"]))


def apply_to(dp: DataPlane, state: DesiredState) -> None:
    """The in-process apply callback: the data plane's pools become the state's, then its routes (when they
    moved, through the one place a RouteTable is built)."""
    dp.set_pools(state.pools)
    routes = dp.routes
    active = dp.pools[state.active]
    preview = dp.pools[state.preview] if state.preview else None
    if routes.generation != state.generation or routes.active is not active or routes.preview is not preview:
        dp.route(active, preview, state.generation)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
