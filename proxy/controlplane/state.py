"""The desired state as plain JSON (pools, health verdicts, routes) and its application to a DataPlane.

The supervisor sends the pools (each with the slot the shared route word names it by) to every worker
when they change, and each acknowledges; routes reach workers through the word (`proxy.workers.routeword`).
A fleet's shared state in etcd carries the routes themselves. Stats flow back as counters to be summed.
"""

from __future__ import annotations

from typing import Any

from proxy.config import parse_address
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.pool import Health, Pool
from proxy.dataplane.routes import RouteTable


def snapshot_state(dp: DataPlane) -> dict[str, Any]:
    routes = dp.routes
    return {
        "pools": {
            name: {
                "endpoints": [ep.address for ep in pool.endpoints],
                "balancer": pool.balancer,
                "health": {ep.address: int(ep.checked) for ep in pool.endpoints},
            }
            for name, pool in dp.pools.items()
        },
        "routes": {
            "active": routes.active.name,
            "preview": routes.preview.name if routes.preview else None,
            "generation": routes.generation,
        },
    }


def apply_state(dp: DataPlane, state: dict[str, Any]) -> int:
    """Make `dp` serve `state`; returns the generation now served.

    A worker's state has no routes: they come from the shared route word, whose slots the pools carry.
    """
    wanted = state["pools"]
    slots: dict[int, Pool] = {}
    for name, spec in wanted.items():
        pool, _ = dp.set_pool(name, [parse_address(a) for a in spec["endpoints"]], spec.get("balancer"))
        verdicts = spec.get("health")
        if verdicts is not None:  # absent in a fleet's shared state: health stays each proxy's own
            for ep in pool.endpoints:
                verdict = Health(verdicts.get(ep.address, 0))
                if ep.checked is not verdict:
                    ep.set_checked(verdict)
        if "slot" in spec:
            slots[spec["slot"]] = pool
    for name in [n for n in dp.pools if n not in wanted]:
        dp.remove_pool(name)
    if slots:
        dp.slots = slots  # one reference write: the request path reads it whole
    routes = state.get("routes")
    if routes is not None and routes["generation"] != dp.routes.generation:
        preview = routes.get("preview")
        dp.apply_routes(
            RouteTable(dp.pools[routes["active"]], dp.pools[preview] if preview else None, routes["generation"])
        )
    return dp.routes.generation


def collect_stats(dp: DataPlane) -> dict[str, Any]:
    pools: list[Pool] = list(dp.pools.values()) + [p for p in list(dp.draining) if p.name not in dp.pools]
    return {
        "clients": len(dp.clients),
        "generation": dp.routes.generation,
        "pools": {
            p.name: {
                "in_flight": p.in_flight,
                "counts": p.counts,
                "latency_buckets": p.latency_buckets,
                "latency_sum": p.latency_sum,
                "endpoints": {ep.address: [ep.in_flight, ep.up] for ep in p.endpoints},
            }
            for p in pools
        },
    }


def merge_stats(dp: DataPlane, reports: list[dict[str, Any]]) -> None:
    """Write the sum of the workers' counters into the supervisor's shadow pools (for status and metrics)."""
    for pool in list(dp.pools.values()) + [dp.null_pool]:
        parts = [r["pools"][pool.name] for r in reports if pool.name in r["pools"]]
        pool.in_flight = sum(p["in_flight"] for p in parts)
        pool.counts = [sum(p["counts"][i] for p in parts) for i in range(len(pool.counts))]
        pool.latency_buckets = [sum(p["latency_buckets"][i] for p in parts) for i in range(len(pool.latency_buckets))]
        pool.latency_sum = sum(p["latency_sum"] for p in parts)
        for ep in pool.endpoints:
            seen = [p["endpoints"][ep.address] for p in parts if ep.address in p["endpoints"]]
            ep.in_flight = sum(s[0] for s in seen)
            ep.passive_ok = ep.passive_ok or any(s[1] for s in seen)
    dp.remote_clients = sum(r["clients"] for r in reports)
