"""BLUEGREEN_SPEC §6 scenarios 1-4 on virtual time, named after Argo's tests."""

from __future__ import annotations

from tests.simulator.harness import FUNCTIONAL, Sim


async def test_blue_green_update() -> None:
    """§6.1 TestBlueGreenUpdate: N=3, active only, scaleDownDelaySeconds 10."""
    sim = Sim()
    await sim.apply(FUNCTIONAL / "rollout-bluegreen.yaml")
    await sim.until(lambda: sim.phase("bluegreen") == "Healthy")
    assert sim.counts("bluegreen") == "3/3/3/3/3"
    assert sim.selector("bluegreen") == sim.hash("bluegreen", 1)
    start = len(sim.cluster.events)
    await sim.update("bluegreen")
    assert sim.phase("bluegreen") == "Progressing"
    await sim.until(lambda: sim.selector("bluegreen") == sim.hash("bluegreen", 2))
    assert sim.phase("bluegreen") == "Healthy"
    assert sim.counts("bluegreen") == "3/6/3/3/3"  # the old RS waits for its scale-down delay
    reasons = [e.reason for e in sim.cluster.events[start:]]
    assert reasons == [
        "RolloutUpdated",
        "NewReplicaSetCreated",
        "RolloutNotCompleted",
        "ScalingReplicaSet",
        "SwitchService",
        "RolloutCompleted",
    ]
    waited = await sim.until(lambda: sim.sizes("bluegreen")[1] == 0)
    assert 9 <= waited <= 10
    assert sim.counts("bluegreen") == "3/3/3/3/3"
