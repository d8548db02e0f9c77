"""The control interface: what a provider (the simulator, the CLI, an operator) may ask of a proxy.

It is small, declarative and idempotent, like Argo's traffic-router reconciler: set a pool's
endpoints, set the routes, read the status back to verify. Two transports implement it:
`proxy.control.local.LocalControl` (in-process) and `proxy.control.http.HttpControl` (admin API).
This module imports nothing else from `proxy`, so the simulator may depend on it alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AckTimeoutError",
    "ConflictError",
    "ControlError",
    "NOT_IN_FLEET",
    "EndpointStatus",
    "InvalidRequestError",
    "NotFoundError",
    "PoolStatus",
    "ProxyControl",
    "ProxyStatus",
    "Routes",
    "UnavailableError",
    "error_for",
]


@dataclass(frozen=True, slots=True)
class Routes:
    """Which pool each listener serves. `generation` grows by one with every change."""

    active: str
    preview: str | None
    generation: int

    def to_json(self) -> dict[str, Any]:
        return {"active": self.active, "preview": self.preview, "generation": self.generation}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Routes:
        return cls(active=data["active"], preview=data.get("preview"), generation=int(data["generation"]))


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    address: str
    healthy: bool
    in_flight: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "healthy": self.healthy, "in_flight": self.in_flight}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndpointStatus:
        return cls(address=data["address"], healthy=bool(data["healthy"]), in_flight=int(data["in_flight"]))


@dataclass(frozen=True, slots=True)
class PoolStatus:
    name: str
    endpoints: tuple[EndpointStatus, ...]
    in_flight: int
    draining: bool
    labels: tuple[tuple[str, str], ...] = ()  # become labels of the pool's metrics (`revision`, `image`...)

    @property
    def healthy_endpoints(self) -> int:
        return sum(1 for e in self.endpoints if e.healthy)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoints": [e.to_json() for e in self.endpoints],
            "in_flight": self.in_flight,
            "draining": self.draining,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolStatus:
        return cls(
            name=data["name"],
            endpoints=tuple(EndpointStatus.from_json(e) for e in data["endpoints"]),
            in_flight=int(data["in_flight"]),
            draining=bool(data["draining"]),
            labels=tuple(sorted(data.get("labels", {}).items())),
        )


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    routes: Routes
    pools: tuple[PoolStatus, ...]

    def pool(self, name: str) -> PoolStatus | None:
        for p in self.pools:
            if p.name == name:
                return p
        return None

    def to_json(self) -> dict[str, Any]:
        """The admin API's `GET /pools` body: each pool with the routes that name it, and the routes."""
        routes = self.routes
        pools = []
        for p in self.pools:
            item = p.to_json()
            item["routes"] = [r for r, n in (("active", routes.active), ("preview", routes.preview)) if n == p.name]
            pools.append(item)
        return {"pools": pools, "routes": routes.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProxyStatus:
        return cls(Routes.from_json(data["routes"]), tuple(PoolStatus.from_json(p) for p in data["pools"]))


NOT_IN_FLEET = "this proxy is not part of a fleet (no state: {backend: etcd} in its config)"


class ControlError(Exception):
    """A refused control call; `status` is the admin API's HTTP status for it."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ControlError):
    status = 400


class NotFoundError(ControlError):
    status = 404


class ConflictError(ControlError):
    status = 409


class UnavailableError(ControlError):
    """The shared state store (etcd) cannot be reached: nothing was changed."""

    status = 503


class AckTimeoutError(ControlError):
    """The change was committed but not every live proxy acknowledged it in time (the message says who)."""

    status = 504


_ERRORS: dict[int, type[ControlError]] = {
    cls.status: cls for cls in (InvalidRequestError, NotFoundError, ConflictError, UnavailableError, AckTimeoutError)
}


def error_for(status: int, message: str) -> ControlError:
    """The error a remote transport raises for a refusal the proxy answered with `status`: the same type and
    message an in-process caller gets (ControlError itself, with that status, for 401, 413, 5xx...)."""
    error = _ERRORS.get(status, ControlError)(message)
    error.status = status
    return error


@runtime_checkable
class ProxyControl(Protocol):
    async def status(self) -> ProxyStatus:
        """Routes and pools as the proxy serves them now (the verify call)."""
        ...

    async def routes(self) -> Routes: ...

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        """Create `pool` or replace its endpoints (`host:port`) and, when given, its labels (metric labels such
        as `revision`; None keeps them); the same list again changes nothing."""
        ...

    async def delete_pool(self, pool: str) -> None:
        """Drain and remove `pool`; ConflictError while a route names it, NotFoundError if unknown."""
        ...

    async def switch(
        self,
        active: str,
        preview: str | None = None,
        *,
        force: bool = False,
        generation: int | None = None,
    ) -> Routes:
        """Point the active listener at `active` (and preview at `preview`, default: the old active).

        Answers once every request that starts afterwards is served by the new routes. ConflictError
        when `active` has no healthy endpoint (unless `force`) or `generation` is not the current one;
        NotFoundError for an unknown pool. Routes equal to the current ones change nothing.
        """
        ...
