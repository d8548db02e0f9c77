"""Where the simulator deliberately follows Argo's documentation rather than a known Argo bug (§8)."""

from __future__ import annotations

from simulator import operations
from tests.simulator.harness import E2E, EXAMPLES, FUNCTIONAL, Sim

CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"


async def test_scale_down_delay_zero_means_now() -> None:
    """Argo #1992: `scaleDownDelaySeconds: 0` leaves the old stack up forever; here it goes at once."""
    sim = Sim()
    await sim.apply(FUNCTIONAL / "rollout-bluegreen.yaml")
    await sim.patch("bluegreen", {"spec": {"strategy": {"blueGreen": {"scaleDownDelaySeconds": 0}}}})
    await sim.until(lambda: sim.phase("bluegreen") == "Healthy")
    await sim.update("bluegreen")
    await sim.until(lambda: sim.status("bluegreen").stable_rs == sim.hash("bluegreen", 2))
    assert sim.sizes("bluegreen") == {1: 0, 2: 3}


async def test_promote_during_auto_promotion_countdown_promotes() -> None:
    """§2.3 quirk: Argo restarts the countdown on a plain promote; its docs say promote resumes."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    bg = {"autoPromotionEnabled": None, "autoPromotionSeconds": 600}
    await sim.patch(name, {"spec": {"strategy": {"blueGreen": bg}}})
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name)
    assert sim.phase(name) == "Healthy"
    assert sim.selector("rollout-bluegreen-active") == sim.hash(name, 2)


async def test_retry_after_post_promotion_failure_starts_a_fresh_run() -> None:
    """Argo #2824: retry after a failed post run re-aborts at once; here it runs the update again."""
    sim = Sim()
    await sim.apply(FUNCTIONAL / "analysistemplate-sleep-job.yaml")
    await sim.apply(E2E / "TestBlueGreenPostPromotionFail.yaml")
    name = "post-promotion-fail"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    fixed = {"templates": [{"templateName": "sleep-job"}], "args": [{"name": "exit-code", "value": "0"}]}
    await sim.patch(name, {"spec": {"strategy": {"blueGreen": {"postPromotionAnalysis": fixed}}}})
    await sim.retry(name)
    await sim.until(lambda: sim.phase(name) == "Paused")  # the manual gate again, not an instant re-abort
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert [r.status.phase for r in sim.runs(name)] == ["Failed", "Successful"]
    assert sim.status(name).stable_rs == sim.hash(name, 2)


async def test_retry_waits_for_the_preview_before_the_smoke_test() -> None:
    """§2.11 quirk: Argo starts the retried pre run while the preview is still scaled down."""
    sim = Sim()
    await sim.apply(FUNCTIONAL / "analysistemplate-sleep-job.yaml")
    await sim.apply(E2E / "TestBlueGreenPrePromotionFail.yaml")
    name = "pre-promotion-fail"
    await sim.patch(name, {"spec": {"strategy": {"blueGreen": {"abortScaleDownDelaySeconds": 5}}}})
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    await sim.advance(10)
    assert sim.sizes(name)[2] == 0
    await sim.retry(name)
    assert len(sim.runs(name)) == 1  # no run against an empty preview
    await sim.until(lambda: len(sim.runs(name)) == 2)
    assert all(p.status.ready for p in sim.pods(name, 2))


async def test_promote_full_after_abort_and_undo() -> None:
    """§2.12 promote --full works after an abort; §2.13 undo goes back to the previous template."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.abort(name)
    await sim.promote(name, full=True)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.status(name).stable_rs == sim.hash(name, 2)
    assert operations.undo(sim.store, name) == "rollout 'rollout-bluegreen' undo"
    await sim.cluster.settle()
    assert sim.phase(name) == "Healthy"  # rev1 was still inside its scale-down delay: fast rollback
    assert sim.status(name).stable_rs == sim.hash(name, 3)
    assert operations.undo(sim.store, name, to_revision=3).endswith(
        "skipped rollback (current template already matches revision 3)"
    )
