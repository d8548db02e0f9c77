"""Pools of endpoints: balancing, health state, in-flight counts, idle upstream connections, drain.

Counters here are plain ints touched on the event loop only; `proxy.controlplane.metrics` reads them when
Prometheus scrapes, so the hot path never takes a lock or looks up a labelled child.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from proxy.config import Config, HealthCheckConfig, OutlierConfig, parse_address, split_pool_key
from proxy.dataplane.tls import client_context

if TYPE_CHECKING:
    from proxy.dataplane.upstream import UpstreamConnection

# Upstream latency histogram bounds in seconds, request sent -> response head received: 50 µs (a loopback
# upstream answers in ~100 µs) to 10 s, measured with perf_counter (the loop's clock steps in milliseconds).
# (`tuple[float, ...]`: a fixed-length tuple type would be unboxed by mypyc and boxed again, 17 floats and
# a tuple, at every use.)
LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
BUCKETS: Final = len(LATENCY_BOUNDS) + 1
LISTENERS = ("active", "preview")  # a listener's index in a pool's counters


def latency_bucket(latency: float) -> int:
    """`bisect_left(LATENCY_BOUNDS, latency)`, from the bottom: a loopback or LAN upstream answers in the first
    few buckets, so this stops after a few compares (the call to `bisect` and its boxing cost ~4k instructions
    under mypyc)."""
    bounds = LATENCY_BOUNDS
    i = 0
    n = len(bounds)
    while i < n and bounds[i] < latency:
        i += 1
    return i


class Health(IntEnum):
    UNKNOWN = 0  # never probed: routable (optimistic), verified by the Switch before a flip
    HEALTHY = 1
    UNHEALTHY = 2


class Endpoint:
    """One upstream `host:port` of a pool."""

    __slots__ = (
        "address",
        "checked",
        "ejected_until",
        "ejections",
        "failures",
        "host",
        "idle",
        "in_flight",
        "log_address",
        "log_json",
        "passive_ok",
        "pool",
        "port",
        "retired",
        "streak",
        "up",
    )

    def __init__(self, pool: Pool, host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.log_address = self.address.encode()  # as the access log writes it, encoded once
        self.log_json = b'"' + self.log_address + b'"'
        self.in_flight = 0
        # Kept-alive connections, oldest first: taken from the end (LIFO), expired from the front. A list, not a
        # deque: under mypyc its append and pop are C calls, once per request each.
        self.idle: list[UpstreamConnection] = []
        self.checked = Health.UNKNOWN  # last verdict of active checks
        self.passive_ok = False  # a response was received since the last ejection
        self.failures = 0  # consecutive connect failures (passive ejection)
        self.ejected_until = 0.0
        self.ejections = 0  # passive ejections so far (the control plane reports them; nothing logs here)
        self.retired = False  # removed from its pool: finish in-flight, pool nothing
        self.streak = 0  # active checks: consecutive successes (> 0) or failures (< 0)
        self.up = True  # routable: not ejected and not failed by active checks

    @property
    def health(self) -> Health:
        if self.ejected_until or self.checked is Health.UNHEALTHY:
            return Health.UNHEALTHY
        if self.checked is Health.HEALTHY or self.passive_ok:
            return Health.HEALTHY
        return Health.UNKNOWN

    def _refresh(self) -> None:
        self.up = not self.ejected_until and self.checked is not Health.UNHEALTHY

    def set_checked(self, verdict: Health) -> None:
        self.checked = verdict
        if verdict is Health.HEALTHY:
            self.failures = 0
            self.ejected_until = 0.0
        self._refresh()

    def connect_failed(self, now: float, outlier: OutlierConfig) -> None:
        self.failures += 1
        if self.failures >= outlier.consecutive_failures and not self.ejected_until:
            self.ejected_until = now + outlier.ejection_time
            self.ejections += 1
            self.passive_ok = False
            self._refresh()

    def responded(self) -> None:
        # Called for every response: keep it to two attribute writes.
        self.failures = 0
        self.passive_ok = True

    def expire_ejection(self, now: float) -> None:
        if self.ejected_until and self.ejected_until <= now:
            self.ejected_until = 0.0
            self.failures = 0
            self._refresh()

    def close_idle(self, older_than: float | None = None) -> None:
        idle = self.idle
        count = 0
        while count < len(idle) and (older_than is None or idle[count].idle_since < older_than):
            count += 1
        expired = idle[:count]
        del idle[:count]
        for conn in expired:
            conn.close()


class Pool:
    """A named set of endpoints; `routed` is false once no route names it (it drains). `name` is its key in
    the proxy's one pool namespace (`app/name` for an application other than the default, `proxy.config`)."""

    __slots__ = (
        "app",
        "balancer",
        "color_header",
        "counts",
        "drain_deadline",
        "endpoints",
        "health_check",
        "in_flight",
        "latency_buckets",
        "latency_sum",
        "local_name",
        "log_json",
        "log_name",
        "max_idle",
        "max_in_flight",
        "name",
        "removed",
        "routed",
        "rr",
        "server_name",
        "ssl",
    )

    def __init__(
        self,
        name: str,
        addresses: Iterable[tuple[str, int]],
        *,
        balancer: str = "round_robin",
        health_check: HealthCheckConfig | None = None,
        max_in_flight: int = 0,
        max_idle: int = 256,
    ) -> None:
        self.name = name
        self.app, self.local_name = split_pool_key(name)
        self.log_name = self.local_name.encode()  # as the access log writes it, encoded once
        # The json access log's app, listener and pool of a request this pool serves, by listener: one piece.
        self.log_json = tuple(
            b'"app":"%s","listener":"%s","pool":"%s"' % (self.app.encode(), listener, self.log_name)
            for listener in (b"active", b"preview")
        )
        self.balancer = balancer
        self.health_check = health_check or HealthCheckConfig()
        self.max_in_flight = max_in_flight
        self.max_idle = max_idle
        self.endpoints: tuple[Endpoint, ...] = tuple(Endpoint(self, h, p) for h, p in addresses)
        self.rr = 0
        self.ssl: ssl.SSLContext | None = None  # re-encryption to the endpoints (`tls` of the pool's config)
        self.server_name: str | None = None  # SNI and verified name; None: each endpoint's host
        self.in_flight = 0
        self.routed = False
        self.removed = False
        self.drain_deadline = 0.0
        # Precomputed once: every response served by this pool says so (testers and smoke tests verify it).
        self.color_header = b"x-served-by-color: " + self.local_name.encode() + b"\r\n"
        # By listener (active 0, preview 1), flat for one index per update: responses by status class at
        # row = listener * 6 + class (class 0: no response); latency buckets at row * BUCKETS + bucket.
        self.counts = [0] * (6 * len(LISTENERS))
        self.latency_buckets = [0] * (BUCKETS * 6 * len(LISTENERS))
        self.latency_sum = [0.0] * (6 * len(LISTENERS))

    def addresses(self) -> list[tuple[str, int]]:
        return [(ep.host, ep.port) for ep in self.endpoints]

    @property
    def draining(self) -> bool:
        return not self.routed and self.in_flight > 0

    def pick(self, exclude: Endpoint | None = None) -> Endpoint | None:
        """The next routable endpoint; None when there is none (or all are at their in-flight limit)."""
        endpoints = self.endpoints
        n = len(endpoints)
        limit = self.max_in_flight
        if self.balancer == "least_in_flight":
            best: Endpoint | None = None
            for ep in endpoints:
                if ep.up and ep is not exclude and (not limit or ep.in_flight < limit):
                    if best is None or ep.in_flight < best.in_flight:
                        best = ep
            return best
        start = self.rr
        if start < n and not limit:
            ep = endpoints[start]  # the usual case, without the loop: the next endpoint is up
            if ep.up and ep is not exclude:
                self.rr = start + 1 if start + 1 < n else 0
                return ep
        for i in range(n):
            ep = endpoints[(start + i) % n]
            if ep.up and ep is not exclude and (not limit or ep.in_flight < limit):
                self.rr = (start + i + 1) % n
                return ep
        if exclude is not None and exclude.up and n and (not limit or exclude.in_flight < limit):
            return exclude  # the only endpoint left: retry it on a fresh connection
        return None

    def observe(self, status: int, latency: float, listener: int = 0) -> None:
        row = listener * 6 + (status // 100 if 100 <= status < 600 else 0)
        self.counts[row] += 1
        if latency >= 0.0:
            self.latency_buckets[row * BUCKETS + latency_bucket(latency)] += 1
            self.latency_sum[row] += latency

    def replace_endpoints(self, addresses: Iterable[tuple[str, int]]) -> list[Endpoint]:
        """New endpoint list; kept addresses keep their state, dropped ones finish in-flight work and retire.

        Returns the retired endpoints, whose idle connections the caller closes on the data-plane loop.
        """
        current = {(ep.host, ep.port): ep for ep in self.endpoints}
        new = []
        for host, port in addresses:
            ep = current.pop((host, port), None)
            new.append(ep if ep is not None else Endpoint(self, host, port))
        for ep in current.values():
            ep.retired = True
        self.endpoints = tuple(new)
        self.rr = 0
        return list(current.values())

    def close_idle(self) -> None:
        for ep in self.endpoints:
            ep.close_idle()


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What a pool should be: its endpoints (`host:port`), balancer (None: keep the current one) and the
    labels its metrics carry (`revision`, `image`...)."""

    endpoints: tuple[str, ...]
    balancer: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def addresses(self) -> list[tuple[str, int]]:
        return [parse_address(a) for a in self.endpoints]


class PoolSet:
    """The live Pool objects by name, shaped after specs: the data plane's, or the supervisor's (which
    holds them for health checks and status only). Kept endpoints keep their state across changes."""

    __slots__ = ("config", "pools")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pools: dict[str, Pool] = {}

    def set(
        self, name: str, addresses: Iterable[tuple[str, int]], balancer: str | None = None
    ) -> tuple[Pool, str, list[Endpoint]]:
        """Create pool `name` or replace its endpoints (and balancer): the one place pools change shape.

        Returns the pool, what happened ("new", "changed" or "": the same list again changes nothing) and
        the endpoints it retired.
        """
        addresses = list(addresses)
        config = self.config
        pool = self.pools.get(name)
        if pool is None:
            pc = config.pool(name)
            pool = self.pools[name] = Pool(
                name,
                addresses,
                balancer=balancer or "round_robin",
                health_check=pc.health_check if pc else config.health_check,
                max_in_flight=config.limits.max_in_flight_per_endpoint,
                max_idle=config.limits.max_idle_per_endpoint,
            )
            self._secure(pool)
            return pool, "new", []
        if pool.addresses() == addresses and (balancer is None or balancer == pool.balancer):
            return pool, "", []
        retired = pool.replace_endpoints(addresses)
        if balancer is not None:
            pool.balancer = balancer
        return pool, "changed", retired

    def configure(self, config: Config) -> None:
        """New settings for every pool (health checks, limits), as a reload brings them."""
        self.config = config
        for pool in self.pools.values():
            pc = config.pool(pool.name)
            pool.health_check = pc.health_check if pc else config.health_check
            pool.max_in_flight = config.limits.max_in_flight_per_endpoint
            pool.max_idle = config.limits.max_idle_per_endpoint
            self._secure(pool)

    def _secure(self, pool: Pool) -> None:
        """The pool's upstream TLS from its config (pools made through the admin API speak plain HTTP)."""
        pc = self.config.pool(pool.name)
        tls = pc.tls if pc else None
        pool.ssl = client_context(tls, self.config.source) if tls is not None else None
        pool.server_name = tls.server_name if tls is not None else None

    def verdicts(self) -> dict[str, dict[str, int]]:
        """Each endpoint's last active-check verdict, by pool: what workers are told."""
        return {name: {ep.address: int(ep.checked) for ep in pool.endpoints} for name, pool in self.pools.items()}

    def apply_verdicts(self, verdicts: Mapping[str, Mapping[str, int]]) -> None:
        for name, by_address in verdicts.items():
            pool = self.pools.get(name)
            if pool is None:
                continue
            for ep in pool.endpoints:
                verdict = Health(by_address.get(ep.address, 0))
                if ep.checked is not verdict:
                    ep.set_checked(verdict)
