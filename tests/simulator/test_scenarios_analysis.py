"""BLUEGREEN_SPEC §6 scenarios 17-29: pre- and post-promotion analysis with Argo's sleep-job template."""

from __future__ import annotations

from tests.simulator.harness import E2E, FUNCTIONAL, Sim, patches

SLEEP_JOB = FUNCTIONAL / "analysistemplate-sleep-job.yaml"


async def _sim(test: str) -> Sim:
    sim = Sim()
    await sim.apply(SLEEP_JOB)
    await sim.apply(E2E / f"{test}.yaml")
    return sim


async def test_blue_green_promote_full() -> None:
    """§6.17: promote --full while the pre-promotion run is going: Healthy, exactly one AnalysisRun."""
    sim = await _sim("TestBlueGreenPromoteFull")
    name = "bluegreen-promote-full"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: len(sim.runs(name)) == 1)
    await sim.advance(1)
    assert sim.runs(name)[0].status.phase == "Running"
    await sim.promote(name, full=True)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    runs = sim.runs(name)
    assert len(runs) == 1 and runs[0].spec.get("terminate") is True
    assert (runs[0].status.phase, runs[0].status.message) == ("Successful", "Run Terminated")
    assert sim.selector("bluegreen-promote-full-active") == sim.hash(name, 2)


async def test_blue_green_analysis() -> None:
    """§6.19: pre and post analysis, then re-applying the original manifest is a fast rollback."""
    sim = await _sim("TestBlueGreenAnalysis")
    name = "bluegreen-analysis"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.runs(name) == []
    (patch,) = patches("TestBlueGreenAnalysis")
    await sim.patch(name, patch)
    assert sim.phase(name) == "Progressing"
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert [r.name for r in sim.runs(name)] == [f"{name}-{sim.hash(name, 2)}-2-pre"]
    assert sim.runs(name)[0].status.phase == "Successful"
    assert sim.selector("bluegreen-analysis-active") == sim.hash(name, 1)
    assert sim.selector("bluegreen-analysis-preview") == sim.hash(name, 2)
    await sim.promote(name)
    assert sim.selector("bluegreen-analysis-active") == sim.hash(name, 2)
    assert len(sim.runs(name)) == 2
    assert sim.counts(name) == "1/2/1/1/1"
    assert (sim.phase(name), sim.status(name).message) == ("Progressing", "waiting for analysis to complete")
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.status(name).stable_rs == sim.hash(name, 2)
    # Re-apply the original Rollout within the 30 s scale-down delay: instant, no pause, no analysis.
    await sim.apply_doc(E2E / "TestBlueGreenAnalysis.yaml", "Rollout")
    assert sim.phase(name) == "Healthy"
    assert len(sim.runs(name)) == 2
    rollback = sim.rs(name, 3)
    assert rollback.metadata.annotations["rollout.argoproj.io/revision-history"] == "1"
    st = sim.status(name)
    assert st.stable_rs == st.active_selector == st.preview_selector == rollback.pod_hash
    assert st.completion == "FastRolledBack"


async def test_blue_green_pre_promotion_fail() -> None:
    """§6.20: the pre run fails (exit 1) => Degraded; fix the args (no new revision), retry => Healthy."""
    sim = await _sim("TestBlueGreenPrePromotionFail")
    name = "pre-promotion-fail"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    st = sim.status(name)
    assert len(sim.runs(name)) == 1
    assert st.message.startswith("RolloutAborted: Rollout aborted update to revision 2: Blue/green pre-promotion")
    assert st.stable_rs == st.active_selector == sim.hash(name, 1)
    assert st.preview_selector == sim.hash(name, 2)
    await sim.advance(60)
    assert sim.sizes(name) == {1: 2, 2: 1}  # abortScaleDownDelaySeconds: 0 keeps the preview up
    (fix,) = patches("TestBlueGreenPrePromotionFail")
    await sim.patch(name, fix)
    assert len(sim.replica_sets(name)) == 2
    await sim.retry(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    st = sim.status(name)
    assert len(sim.runs(name)) == 2
    assert st.stable_rs == st.active_selector == st.preview_selector == sim.hash(name, 2)


async def test_blue_green_post_promotion_fail() -> None:
    """§6.21: the post run fails after the switch => traffic goes back to the stable revision."""
    sim = await _sim("TestBlueGreenPostPromotionFail")
    name = "post-promotion-fail"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name)
    st = sim.status(name)
    assert st.active_selector == sim.hash(name, 2) and st.stable_rs == sim.hash(name, 1)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    st = sim.status(name)
    assert st.active_selector == st.stable_rs == sim.hash(name, 1)
    assert st.preview_selector == sim.hash(name, 2)
    assert [r.status.phase for r in sim.runs(name)] == ["Failed"]
    assert "post-promotion analysis phase error/failed" in st.message


async def test_blue_green_abort_and_update() -> None:
    """§6.22: after a post failure a new revision (manual gate, passing post) goes through."""
    sim = await _sim("TestBlueGreenAbortAndUpdate")
    name = "bluegreen-abort-and-update"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    assert sim.selector(f"{name}-active") == sim.hash(name, 1)
    assert sim.selector(f"{name}-preview") == sim.hash(name, 2)
    (patch,) = patches("TestBlueGreenAbortAndUpdate")
    await sim.patch(name, patch)
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.sizes(name) == {1: 1, 2: 1, 3: 1}
    assert "scale-down-deadline" in sim.rs(name, 2).metadata.annotations
    assert sim.selector(f"{name}-active") == sim.hash(name, 1)
    assert sim.selector(f"{name}-preview") == sim.hash(name, 3)
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(f"{name}-active") == sim.selector(f"{name}-preview") == sim.hash(name, 3)
    assert len(sim.pods(name, 1)) == 1 and "scale-down-deadline" in sim.rs(name, 1).metadata.annotations
    assert len(sim.runs(name)) == 2


async def test_blue_green_kitchen_sink() -> None:
    """§6.23: previewReplicaCount 1, autoPromotionSeconds 10, delay 5, pre passes after 10 s, post fails."""
    sim = await _sim("TestBlueGreenKitchenSink")
    name = "bluegreen-kitchensink"
    active, preview = f"{name}-active", f"{name}-preview"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: len(sim.runs(name)) == 1)
    pre_started = sim.cluster.clock.now()
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.cluster.clock.now() - pre_started == 10  # paused only after the pre run succeeded
    assert sim.selector(active) == sim.status(name).stable_rs == sim.hash(name, 1)
    assert sim.selector(preview) == sim.hash(name, 2)
    assert sim.sizes(name) == {1: 2, 2: 1}
    assert sim.counts(name) == "2/3/1/2/2"
    await sim.advance(5)
    assert sim.phase(name) == "Paused" and sim.sizes(name) == {1: 2, 2: 1}
    await sim.until(lambda: sim.selector(active) == sim.hash(name, 2))
    assert sim.sizes(name) == {1: 2, 2: 2}
    assert sim.counts(name) == "2/4/2/2/2"
    await sim.until(lambda: sim.phase(name) == "Degraded")
    assert len(sim.runs(name)) == 2
    assert sim.selector(active) == sim.status(name).stable_rs == sim.hash(name, 1)
    assert sim.selector(preview) == sim.hash(name, 2)
    assert sim.sizes(name)[2] == 2  # the 30 s abort delay is not over yet


async def test_analysis_run_history_limits() -> None:
    """spec.analysis.successfulRunHistoryLimit / unsuccessfulRunHistoryLimit keep the newest runs only."""
    sim = await _sim("TestBlueGreenAnalysis")
    name = "bluegreen-analysis"
    history = {"successfulRunHistoryLimit": 1, "unsuccessfulRunHistoryLimit": 0}
    await sim.patch(name, {"spec": {"analysis": history}})
    await sim.until(lambda: sim.phase(name) == "Healthy")
    for revision in (2, 3):
        await sim.update(name)
        await sim.until(lambda: sim.phase(name) == "Paused")
        await sim.promote(name)
        await sim.until(lambda rev=revision: sim.status(name).stable_rs == sim.hash(name, rev))
    runs = sorted(r.name for r in sim.runs(name))
    # rev3's pre and post are current; of rev2's two successful runs only the newest (post) is kept.
    assert runs == sorted(
        [
            f"{name}-{sim.hash(name, 2)}-2-post",
            f"{name}-{sim.hash(name, 3)}-3-pre",
            f"{name}-{sim.hash(name, 3)}-3-post",
        ]
    )
