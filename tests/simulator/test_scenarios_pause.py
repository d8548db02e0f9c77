"""BLUEGREEN_SPEC §6 scenarios 2-9: initial deploy, manual gate, previewReplicaCount, timers, user pause."""

from __future__ import annotations

from tests.simulator.harness import E2E, EXAMPLES, Sim

CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"


async def test_blue_green_creates_replica_set() -> None:
    """§6.2 TestBlueGreenCreatesReplicaSet: the initial deploy never pauses and runs no analysis."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    rs1 = sim.rs(name, 1)
    st = sim.status(name)
    assert st.stable_rs == rs1.pod_hash  # set at once, before any pod is ready
    assert sim.selector("rollout-bluegreen-preview") == rs1.pod_hash
    assert sim.selector("rollout-bluegreen-active") == ""
    assert st.active_selector == ""
    assert sim.history[name][0] == ("Progressing", "more replicas need to be updated")
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.history[name] == [
        ("Progressing", "more replicas need to be updated"),
        ("Progressing", "updated replicas are still becoming available"),
        ("Healthy", ""),
    ]
    assert sim.selector("rollout-bluegreen-active") == rs1.pod_hash
    assert sim.status(name).pause_conditions == []
    assert sim.runs(name) == []
    assert "RolloutPaused" not in sim.events(name)


async def test_kubectl_wait_for_paused() -> None:
    """§6.3 TestKubectlWaitForPaused: manual gate, then promote."""
    sim = Sim()
    await sim.apply(E2E / "TestKubectlWaitForPaused.yaml")
    name = "kubectl-wait-paused"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    st = sim.status(name)
    assert st.message == "BlueGreenPause"
    assert sim.condition(name, "Paused") == ("True", "RolloutPaused")
    assert sim.selector(name) == sim.hash(name, 1)  # this test's only Service is the active one
    await sim.advance(3600)  # a manual gate waits forever
    assert sim.phase(name) == "Paused"
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.condition(name, "Paused") == ("False", "RolloutPaused")
    assert sim.selector(name) == sim.hash(name, 2)


async def test_kubectl_wait_for_completed() -> None:
    """§6.4 TestKubectlWaitForCompleted: auto-promotion waits for readiness (initialDelaySeconds 5)."""
    sim = Sim()
    await sim.apply(E2E / "TestKubectlWaitForCompleted.yaml")
    name = "kubectl-wait-healthy"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.advance(3)
    assert sim.phase(name) == "Progressing"
    assert sim.condition(name, "Healthy") == ("False", "RolloutHealthy")
    assert sim.selector(name) == sim.hash(name, 1)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.condition(name, "Healthy") == ("True", "RolloutHealthy")
    assert sim.selector(name) == sim.hash(name, 2)


async def test_blue_green_preview_replica_count() -> None:
    """§6.5 TestBlueGreenPreviewReplicaCount: N=2, previewReplicaCount 1, scaleDownDelaySeconds 5, manual."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenPreviewReplicaCount.yaml")
    name = "bluegreen-preview-replicas"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.sizes(name) == {1: 2, 2: 1}
    assert sim.counts(name) == "2/3/1/2/2"
    await sim.promote(name)
    # rev2 is scaled to 2 first; the switch waits until both pods are available.
    assert sim.selector(f"{name}-active") == sim.hash(name, 1)
    assert sim.rs(name, 2).replicas == 2
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(f"{name}-active") == sim.hash(name, 2)
    assert sim.counts(name) == "2/4/2/2/2"
    await sim.until(lambda: sim.sizes(name)[1] == 0, limit=6)


async def test_blue_green_preview_replica_count_promote_full() -> None:
    """§6.6: paused longer than progressDeadlineSeconds stays Paused; promote --full with previewReplicaCount."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenPreviewReplicaCountPromoteFull.yaml")
    name = "bluegreen-preview-replicas-promote-full"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.advance(2)
    assert sim.phase(name) == "Paused"
    assert sim.counts(name) == "2/3/1/2/2"
    await sim.promote(name, full=True)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.counts(name) == "2/4/2/2/2"
    assert sim.status(name).completion == "FastPromoted"


async def _auto_promotion(seconds: int) -> tuple[Sim, str]:
    sim = Sim()
    await sim.apply(E2E / "TestKubectlWaitForPaused.yaml")
    name = "kubectl-wait-paused"
    await sim.patch(
        name, {"spec": {"strategy": {"blueGreen": {"autoPromotionEnabled": None, "autoPromotionSeconds": seconds}}}}
    )
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    return sim, name


async def test_blue_green_duration_auto_promotion() -> None:
    """§6.7 AutoPromoteAfterDelayTimePasses: nothing changes before S; after S one pass promotes."""
    sim, name = await _auto_promotion(30)
    paused_at = sim.status(name).pause_conditions[0].start_time
    await sim.advance(29)
    assert sim.phase(name) == "Paused"
    assert sim.selector(name) == sim.hash(name, 1)
    await sim.advance(1)
    st = sim.status(name)
    assert sim.cluster.clock.now() - paused_at == 30
    assert (st.phase, st.stable_rs, st.active_selector) == ("Healthy", sim.hash(name, 2), sim.hash(name, 2))
    assert st.pause_conditions == [] and not st.controller_pause


async def test_no_auto_promote_after_delay_time_passes_if_user_paused() -> None:
    """§6.8: spec.paused beats an expired BlueGreenPause timer."""
    sim, name = await _auto_promotion(10)
    await sim.patch(name, {"spec": {"paused": True}})
    await sim.advance(60)
    assert (sim.phase(name), sim.status(name).message) == ("Paused", "manually paused")
    assert sim.selector(name) == sim.hash(name, 1)


async def test_blue_green_duration_spec_paused() -> None:
    """§6.9 TestBlueGreenDuration_SpecPaused: update while spec.paused, unpause, promoted by the timer."""
    sim = Sim()
    await sim.apply(EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml")
    name = "rollout-bluegreen"
    await sim.patch(
        name, {"spec": {"strategy": {"blueGreen": {"autoPromotionEnabled": None, "autoPromotionSeconds": 2}}}}
    )
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.patch(name, {"spec": {"paused": True, "template": {"metadata": {"annotations": {"v": "2"}}}}})
    await sim.advance(30)
    assert (sim.phase(name), sim.status(name).message) == ("Paused", "manually paused")
    assert sim.selector(f"{name}-preview") == sim.hash(name, 1)  # preview is not switched while paused
    await sim.patch(name, {"spec": {"paused": False}})
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.selector(f"{name}-preview") == sim.hash(name, 2)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(f"{name}-active") == sim.hash(name, 2)


async def test_blue_green_duration_fully_promoted() -> None:
    """§6.18 TestBlueGreenDuration_FullyPromoted: promote --full from the pause; completion FastPromoted."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name, full=True)
    assert sim.phase(name) == "Healthy"
    st = sim.status(name)
    assert (st.completion, st.stable_rs, st.promote_full) == ("FastPromoted", sim.hash(name, 2), False)
    assert sim.cluster.events[-1].message.endswith(": Full promotion requested")
