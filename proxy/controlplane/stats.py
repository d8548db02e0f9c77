"""Counters as metrics and status read them: a Pool's own in one process, the workers' summed under
a supervisor (`WorkerStats`), so the control plane never writes counters into pools it does not serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy.dataplane.plane import DataPlane
from proxy.dataplane.pool import BUCKETS, LISTENERS, Pool


class Counters(Protocol):
    """What metrics read per pool; a `Pool` is one, and so is a `PoolCounters` summed from workers."""

    @property
    def name(self) -> str: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def counts(self) -> list[int]: ...
    @property
    def latency_buckets(self) -> list[int]: ...
    @property
    def latency_sum(self) -> list[float]: ...
    @property
    def draining(self) -> bool: ...


@dataclass
class PoolCounters:
    name: str
    in_flight: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * (6 * len(LISTENERS)))
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (BUCKETS * 6 * len(LISTENERS)))
    latency_sum: list[float] = field(default_factory=lambda: [0.0] * (6 * len(LISTENERS)))
    draining: bool = False
    endpoints: dict[str, int] = field(default_factory=dict)  # in flight, by address


def served_pools(dp: DataPlane) -> list[Pool]:
    """The pools a data plane holds: registered ones, those that still drain, and the no-route pool."""
    return list(dp.pools.values()) + [p for p in list(dp.draining) if p.name not in dp.pools] + [dp.null_pool]


def collect(dp: DataPlane) -> dict[str, Any]:
    """A worker's report (JSON) of its counters."""
    return {
        "clients": len(dp.clients),
        "pools": {
            p.name: {
                "in_flight": p.in_flight,
                "counts": p.counts,
                "latency_buckets": p.latency_buckets,
                "latency_sum": p.latency_sum,
                "draining": p.draining,
                "endpoints": {ep.address: [ep.in_flight, ep.passive_ok, ep.ejections] for ep in p.endpoints},
            }
            for p in served_pools(dp)
        },
        "access_log_dropped": dp.access_log_dropped,
    }


class WorkerStats:
    """The workers' last reports, summed per pool: what a supervisor's metrics and status read."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolCounters] = {}
        self.clients = 0
        self.access_log_dropped = 0

    def merge(self, reports: Iterable[dict[str, Any]], pools: dict[str, Pool]) -> None:
        """Sum `reports`; passive health (an endpoint answered) is noted on the control plane's `pools`."""
        summed: dict[str, PoolCounters] = {}
        clients = dropped = 0
        ejections: dict[tuple[str, str], int] = {}
        for report in reports:
            clients += report["clients"]
            dropped += report.get("access_log_dropped", 0)
            for name, part in report["pools"].items():
                c = summed.get(name)
                if c is None:
                    c = summed[name] = PoolCounters(name)
                c.in_flight += part["in_flight"]
                c.counts = [a + b for a, b in zip(c.counts, part["counts"], strict=True)]
                c.latency_buckets = [a + b for a, b in zip(c.latency_buckets, part["latency_buckets"], strict=True)]
                c.latency_sum = [a + b for a, b in zip(c.latency_sum, part["latency_sum"], strict=True)]
                c.draining = c.draining or part["draining"]
                for address, (in_flight, answered, *more) in part["endpoints"].items():
                    c.endpoints[address] = c.endpoints.get(address, 0) + in_flight
                    ejections[name, address] = ejections.get((name, address), 0) + (more[0] if more else 0)
                    pool = pools.get(name)
                    if answered and pool is not None:
                        for ep in pool.endpoints:
                            if ep.address == address:
                                ep.passive_ok = True
        self.pools, self.clients, self.access_log_dropped = summed, clients, dropped
        for pool in pools.values():  # passive ejections, as the workers counted them (`Watch` reports them)
            for ep in pool.endpoints:
                ep.ejections = ejections.get((pool.name, ep.address), 0)
