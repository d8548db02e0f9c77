"""Balancing and endpoint state, without sockets."""

from __future__ import annotations

import asyncio
from bisect import bisect_left

from proxy.config import OutlierConfig
from proxy.dataplane.outbox import Outbox
from proxy.dataplane.pool import BUCKETS, LATENCY_BOUNDS, Endpoint, Health, Pool, latency_bucket
from proxy.dataplane.upstream import UpstreamConnection

ADDRS = [("127.0.0.1", 9001), ("127.0.0.1", 9002), ("127.0.0.1", 9003)]


def test_round_robin_skips_unroutable_and_excluded() -> None:
    pool = Pool("blue", ADDRS)
    assert [pool.pick().port for _ in range(4)] == [9001, 9002, 9003, 9001]  # type: ignore[union-attr]
    pool.endpoints[1].set_checked(Health.UNHEALTHY)
    assert [pool.pick().port for _ in range(3)] == [9003, 9001, 9003]  # type: ignore[union-attr]
    assert pool.pick(exclude=pool.endpoints[0]).port == 9003  # type: ignore[union-attr]


def test_least_in_flight_and_shedding() -> None:
    pool = Pool("blue", ADDRS, balancer="least_in_flight", max_in_flight=2)
    pool.endpoints[0].in_flight = 2
    pool.endpoints[1].in_flight = 1
    assert pool.pick().port == 9003  # type: ignore[union-attr]
    pool.endpoints[2].in_flight = 2
    assert pool.pick().port == 9002  # type: ignore[union-attr]
    pool.endpoints[1].in_flight = 2
    assert pool.pick() is None  # every endpoint at its limit: the caller sheds with 503


def routable(ep: Endpoint) -> bool:
    return ep.up  # calls, so the checker does not narrow endpoint state across changes


def health(ep: Endpoint) -> Health:
    return ep.health


def test_passive_ejection_and_expiry() -> None:
    pool = Pool("blue", ADDRS[:1])
    ep = pool.endpoints[0]
    outlier = OutlierConfig(consecutive_failures=2, ejection_time=5)
    ep.connect_failed(100.0, outlier)
    assert routable(ep)
    ep.connect_failed(100.0, outlier)
    assert not routable(ep) and health(ep) is Health.UNHEALTHY and pool.pick() is None
    ep.expire_ejection(104.0)
    assert not routable(ep)
    ep.expire_ejection(105.0)
    assert routable(ep) and health(ep) is Health.UNKNOWN
    ep.responded()
    assert health(ep) is Health.HEALTHY


def test_replace_endpoints_keeps_state_and_retires_the_rest() -> None:
    pool = Pool("blue", ADDRS)
    kept, dropped = pool.endpoints[0], pool.endpoints[2]
    kept.in_flight = 3
    pool.replace_endpoints([ADDRS[0], ("127.0.0.1", 9100)])
    assert pool.endpoints[0] is kept and kept.in_flight == 3 and not kept.retired
    assert dropped.retired and [ep.port for ep in pool.endpoints] == [9001, 9100]


def test_latency_bucket_is_bisect_left() -> None:
    """Prometheus' `le` buckets: a latency equal to a bound counts in that bound's bucket, past the last in +Inf."""
    values = [0.0, 1e-9, 20.0, 1e9] + [b * f for b in LATENCY_BOUNDS for f in (0.5, 0.999999, 1.0, 1.000001, 1.7)]
    for value in values:
        assert latency_bucket(value) == bisect_left(LATENCY_BOUNDS, value), value
    assert latency_bucket(20.0) == BUCKETS - 1


def test_observe_counts_by_class_and_latency_bucket() -> None:
    pool = Pool("blue", ADDRS)
    pool.observe(200, 0.0007)
    pool.observe(503, 0.2)
    assert pool.counts[2] == 1 and pool.counts[5] == 1
    # Latency by listener and status class: row 2 is the active listener's 2xx, bucket 4 is (0.5 ms, 1 ms].
    assert sum(pool.latency_buckets) == 2 and pool.latency_buckets[2 * BUCKETS + 4] == 1


def test_idle_connections_expire_oldest_first_and_are_reused_last_in_first_out() -> None:
    loop = asyncio.new_event_loop()
    try:
        ep = Pool("blue", ADDRS[:1]).endpoints[0]
        conns = [UpstreamConnection(ep, Outbox(loop)) for _ in range(4)]
        for since, conn in enumerate(conns):
            conn.idle_since = float(since)  # released in this order, as `DataPlane.release` appends
            ep.idle.append(conn)
        ep.close_idle(older_than=1.5)  # idle since 0 and 1: past the upstream keep-alive
        assert [c.closed for c in conns] == [True, True, False, False]
        assert ep.idle == conns[2:]
        assert ep.idle[-1] is conns[3]  # the next request takes the warmest (`Exchange._try_endpoint` pops)
        ep.close_idle(older_than=0.5)  # none that old is left
        assert ep.idle == conns[2:]
        ep.close_idle()  # the endpoint is retired: every one goes
        assert ep.idle == [] and all(c.closed for c in conns)
    finally:
        loop.close()
