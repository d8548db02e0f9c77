"""Prometheus metrics read from the data plane's plain counters at scrape time.

A custom collector in a registry of the proxy's own: the hot path increments ints and never
touches prometheus_client (whose `inc()` takes a lock and whose `labels()` is a dict lookup).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proxy.config import split_pool_key
from proxy.controlplane.stats import Counters
from proxy.controlplane.switch import FLIP_BOUNDS, Switch
from proxy.dataplane import mode as dataplane_mode
from proxy.dataplane.pool import BUCKETS, LATENCY_BOUNDS, LISTENERS, Health

_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class ProxyCollector(Collector):
    """`counters`: each pool's counters (the data plane's pools, or the workers' sums); endpoint health
    comes from the Switch's pools, routes and pool labels from its desired state.

    A pool's `labels` (config or `PUT /api/v1/pools/{name}`) ride on its series, so one query selects one
    revision's traffic on one listener; every family carries the union of the label names (a pool without
    one has it empty, which Prometheus reads as absent). Every pool series names its application (`app`) and
    the pool by its name in it (`pool`)."""

    def __init__(
        self,
        switch: Switch,
        counters: Callable[[], Iterable[Counters]],
        clients: Callable[[], int],
        store_up: Callable[[], bool] | None = None,
        access_log_dropped: Callable[[], int] | None = None,
    ) -> None:
        self.switch = switch
        self.counters = counters
        self.clients = clients
        self.store_up = store_up
        self.access_log_dropped = access_log_dropped

    def collect(self) -> Iterator[Metric]:
        pools = list(self.counters())
        specs = self.switch.state.pools
        names = sorted({name for spec in specs.values() for name, _ in spec.labels})

        def extra(pool: str) -> list[str]:
            spec = specs.get(pool)
            given = dict(spec.labels) if spec is not None else {}
            return [given.get(name, "") for name in names]

        requests = CounterMetricFamily(
            "bluegreen_requests",
            "Responses sent, by application, pool, listener and status class",
            labels=["app", "pool", "listener", "status_class", *names],
        )
        in_flight = GaugeMetricFamily(
            "bluegreen_in_flight_requests", "Requests in flight, by pool", labels=["app", "pool", *names]
        )
        draining = GaugeMetricFamily(
            "bluegreen_pool_draining", "1 while a pool no route names still drains", labels=["app", "pool", *names]
        )
        latency = HistogramMetricFamily(
            "bluegreen_upstream_latency_seconds",
            "Upstream latency: request sent to response head received, by pool, listener and status class",
            labels=["app", "pool", "listener", "status_class", *names],
        )
        health = GaugeMetricFamily(
            "bluegreen_endpoint_healthy",
            "1 when the endpoint is routable",
            labels=["app", "pool", "endpoint", "state"],
        )
        bounds = [repr(b) for b in LATENCY_BOUNDS] + ["+Inf"]
        for pool in pools:
            more = extra(pool.name)
            app, name = split_pool_key(pool.name)
            for li, listener in enumerate(LISTENERS):
                counts = pool.counts[li * 6 : li * 6 + 6]
                for i, cls in enumerate(_CLASSES):
                    if counts[i] or cls in ("2xx", "5xx"):  # both always: a ratio's two sides exist from the start
                        requests.add_metric([app, name, listener, cls, *more], counts[i])
                for i, cls in enumerate(_CLASSES):
                    row = li * 6 + i
                    part = pool.latency_buckets[row * BUCKETS : (row + 1) * BUCKETS]
                    if any(part) or (li == 0 and cls == "2xx"):
                        buckets = list(zip(bounds, accumulate(part), strict=True))
                        latency.add_metric([app, name, listener, cls, *more], buckets, pool.latency_sum[row])
            in_flight.add_metric([app, name, *more], pool.in_flight)
            draining.add_metric([app, name, *more], 1 if pool.draining else 0)
        for live in list(self.switch.pools.values()):
            app, name = split_pool_key(live.name)
            for ep in live.endpoints:
                state = Health(ep.health).name.lower()
                health.add_metric([app, name, ep.address, state], 1 if ep.up else 0)
        yield requests
        yield in_flight
        yield draining
        yield latency
        yield health
        route = GaugeMetricFamily(
            "bluegreen_route",
            "1 for the pool each listener serves, by application",
            labels=["app", "listener", "pool", *names],
        )
        generation = GaugeMetricFamily(
            "bluegreen_route_generation", "Generation of the route table served, by application", labels=["app"]
        )
        for app, routes in list(self.switch.state.apps.items()):
            route.add_metric([app, "active", split_pool_key(routes.active)[1], *extra(routes.active)], 1)
            if routes.preview is not None:
                route.add_metric([app, "preview", split_pool_key(routes.preview)[1], *extra(routes.preview)], 1)
            generation.add_metric([app], routes.generation)
        yield route
        yield generation
        yield CounterMetricFamily("bluegreen_switches", "Route changes applied", self.switch.switches)
        flips = HistogramMetricFamily(
            "bluegreen_switch_duration_seconds", "Time from a flip's call to its answer (the new routes served)"
        )
        flip_bounds = [repr(b) for b in FLIP_BOUNDS] + ["+Inf"]
        flips.add_metric(
            [], list(zip(flip_bounds, accumulate(self.switch.flip_seconds), strict=True)), self.switch.flip_seconds_sum
        )
        yield flips
        yield GaugeMetricFamily("bluegreen_client_connections", "Open client connections", self.clients())
        build = GaugeMetricFamily(
            "bluegreen_build_info", "1, labelled with how the data plane runs", labels=["dataplane"]
        )
        build.add_metric([dataplane_mode()], 1)
        yield build
        if self.access_log_dropped is not None:
            yield CounterMetricFamily(
                "bluegreen_access_log_dropped",
                "Access-log lines dropped rather than wait for a stalled disk (or lost to write errors)",
                self.access_log_dropped(),
            )
        if self.store_up is not None:
            yield GaugeMetricFamily(
                "bluegreen_store_up", "1 while the fleet's state store (etcd) answers", 1 if self.store_up() else 0
            )


class WorkerCollector(Collector):
    """CPU, memory and open descriptors of each `--workers` process, read from /proc at scrape time (the
    supervisor's own come from prometheus_client's process collector)."""

    def __init__(self, workers: Callable[[], Iterable[tuple[int, int]]]) -> None:
        self.workers = workers  # (index, pid) of each live worker
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("bluegreen_worker_cpu_seconds", "CPU time of a worker process", labels=["worker"])
        rss = GaugeMetricFamily(
            "bluegreen_worker_resident_memory_bytes", "Resident memory of a worker process", labels=["worker"]
        )
        fds = GaugeMetricFamily("bluegreen_worker_open_fds", "Open file descriptors of a worker", labels=["worker"])
        for index, pid in list(self.workers()):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                with open(f"/proc/{pid}/statm", "rb") as f:
                    resident = int(f.read().split()[1])
                open_fds = len(os.listdir(f"/proc/{pid}/fd"))
            except (OSError, IndexError, ValueError):
                continue  # not Linux, or the worker just exited
            label = [str(index)]
            cpu.add_metric(label, (int(fields[11]) + int(fields[12])) / self.ticks)  # utime + stime
            rss.add_metric(label, resident * self.page)
            fds.add_metric(label, open_fds)
        yield cpu
        yield rss
        yield fds


def make_registry(
    switch: Switch,
    counters: Callable[[], Iterable[Counters]],
    clients: Callable[[], int],
    store_up: Callable[[], bool] | None = None,
    workers: Callable[[], Iterable[tuple[int, int]]] | None = None,
    access_log_dropped: Callable[[], int] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(switch, counters, clients, store_up, access_log_dropped))
    ProcessCollector(registry=registry)  # this process: CPU, memory, open fds, start time
    if workers is not None:
        registry.register(WorkerCollector(workers))
    return registry
