"""The scheduler: virtual time jumps between moments; real time survives a failing pass."""

from __future__ import annotations

import asyncio

import pytest

from simulator.cluster import Cluster
from simulator.k8s.clock import LoopClock, VirtualClock, format_time, parse_time
from simulator.workloads.pods import VirtualRuntime
from tests.simulator.harness import FUNCTIONAL, Sim


async def test_virtual_day_costs_nothing() -> None:
    sim = Sim()
    await sim.apply(FUNCTIONAL / "rollout-bluegreen.yaml")
    await sim.patch("bluegreen", {"spec": {"strategy": {"blueGreen": {"scaleDownDelaySeconds": 86400}}}})
    await sim.until(lambda: sim.phase("bluegreen") == "Healthy")
    await sim.update("bluegreen")
    started = asyncio.get_running_loop().time()
    waited = await sim.until(lambda: sim.sizes("bluegreen")[1] == 0, limit=2 * 86400)
    assert 86400 <= waited <= 86410
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_advance_until_gives_up() -> None:
    sim = Sim()
    with pytest.raises(TimeoutError, match="within 5 s"):
        await sim.until(lambda: False, limit=5)


def test_clock_round_trips_rfc3339() -> None:
    clock = VirtualClock()
    assert format_time(clock.now()) == "2026-01-01T00:00:00Z"
    clock.set(clock.now() + 90.0)
    clock.set(clock.now() - 50.0)  # never backwards
    assert parse_time(format_time(clock.now())) == clock.now()


async def test_real_time_loop_survives_a_failing_pass(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(LoopClock(), VirtualRuntime())
    calls = 0
    retried = asyncio.Event()
    real_sync = cluster.replicasets.sync

    def flaky(now: float) -> list[float]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        retried.set()
        return real_sync(now)

    cluster.replicasets.sync = flaky  # type: ignore[method-assign]
    runner = asyncio.create_task(cluster.run())
    try:
        await asyncio.wait_for(retried.wait(), 5)  # the failed pass is retried after 1 s
        assert "reconcile pass failed" in caplog.text and not runner.done()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await cluster.close()
