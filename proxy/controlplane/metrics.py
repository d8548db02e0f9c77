"""Prometheus metrics read from the data plane's plain counters at scrape time.

A custom collector in a registry of the proxy's own: the hot path increments ints and never
touches prometheus_client (whose `inc()` takes a lock and whose `labels()` is a dict lookup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from proxy.controlplane.stats import Counters
from proxy.controlplane.switch import Switch
from proxy.dataplane.pool import LATENCY_BOUNDS, Health

_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


class ProxyCollector(Collector):
    """`counters`: each pool's counters (the data plane's pools, or the workers' sums); endpoint health
    comes from the Switch's pools, routes from its desired state."""

    def __init__(
        self,
        switch: Switch,
        counters: Callable[[], Iterable[Counters]],
        clients: Callable[[], int],
        store_up: Callable[[], bool] | None = None,
    ) -> None:
        self.switch = switch
        self.counters = counters
        self.clients = clients
        self.store_up = store_up

    def collect(self) -> Iterator[Metric]:
        pools = list(self.counters())
        requests = CounterMetricFamily(
            "bluegreen_requests", "Responses sent, by pool and status class", labels=["pool", "status_class"]
        )
        in_flight = GaugeMetricFamily("bluegreen_in_flight_requests", "Requests in flight, by pool", labels=["pool"])
        draining = GaugeMetricFamily(
            "bluegreen_pool_draining", "1 while a pool no route names still drains", labels=["pool"]
        )
        latency = HistogramMetricFamily(
            "bluegreen_upstream_latency_seconds",
            "Upstream latency: request sent to response head received",
            labels=["pool"],
        )
        health = GaugeMetricFamily(
            "bluegreen_endpoint_healthy", "1 when the endpoint is routable", labels=["pool", "endpoint", "state"]
        )
        for pool in pools:
            for i, cls in enumerate(_CLASSES):
                if pool.counts[i] or cls in ("2xx", "5xx"):
                    requests.add_metric([pool.name, cls], pool.counts[i])
            in_flight.add_metric([pool.name], pool.in_flight)
            draining.add_metric([pool.name], 1 if pool.draining else 0)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BOUNDS, float("inf")), pool.latency_buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([pool.name], buckets, pool.latency_sum)
        for live in list(self.switch.pools.values()):
            for ep in live.endpoints:
                state = Health(ep.health).name.lower()
                health.add_metric([live.name, ep.address, state], 1 if ep.up else 0)
        yield requests
        yield in_flight
        yield draining
        yield latency
        yield health
        routes = self.switch.routes()
        route = GaugeMetricFamily("bluegreen_route", "1 for the pool each listener serves", labels=["listener", "pool"])
        route.add_metric(["active", routes.active], 1)
        if routes.preview is not None:
            route.add_metric(["preview", routes.preview], 1)
        yield route
        yield GaugeMetricFamily("bluegreen_route_generation", "Generation of the route table served", routes.generation)
        yield CounterMetricFamily("bluegreen_switches", "Route changes applied", self.switch.switches)
        yield GaugeMetricFamily("bluegreen_client_connections", "Open client connections", self.clients())
        if self.store_up is not None:
            yield GaugeMetricFamily(
                "bluegreen_store_up", "1 while the fleet's state store (etcd) answers", 1 if self.store_up() else 0
            )


def make_registry(
    switch: Switch,
    counters: Callable[[], Iterable[Counters]],
    clients: Callable[[], int],
    store_up: Callable[[], bool] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(switch, counters, clients, store_up))
    return registry
