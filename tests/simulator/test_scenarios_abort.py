"""BLUEGREEN_SPEC §6 scenarios 10-16: progress deadlines, aborts, retries."""

from __future__ import annotations

from tests.simulator.harness import E2E, EXAMPLES, Sim, patches

CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"


async def test_blue_green_progress_deadline_exceeded_with_pause() -> None:
    """§6.10: progressDeadlineSeconds 5 < readiness delay 10; Degraded is recoverable; manual gate."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenProgressDeadlineExceededWithPause.yaml")
    name = "rollout-bluegreen-with-pause"
    await sim.until(lambda: sim.phase(name) == "Degraded")
    assert sim.status(name).message.startswith("ProgressDeadlineExceeded: ")
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(name) == sim.hash(name, 2)


async def test_blue_green_progress_deadline_exceeded_without_pause() -> None:
    """§6.11: the same with auto-promotion: Degraded, then Healthy on rev2."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenProgressDeadlineExceededWithoutPause.yaml")
    name = "rollout-bluegreen-without-pause"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(name) == sim.hash(name, 2)


async def test_blue_green_exceed_progress_deadline_abort() -> None:
    """§6.12: a bad image; without progressDeadlineAbort only Degraded, with it an abort that scales down."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenExceedProgressDeadlineAbort.yaml")
    name = "bluegreen-scaledowndelay"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    without_abort, with_abort = patches("TestBlueGreenExceedProgressDeadlineAbort")
    await sim.patch(name, without_abort)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    st = sim.status(name)
    assert sim.condition(name, "Progressing") == ("False", "ProgressDeadlineExceeded")
    assert not st.abort
    await sim.advance(10)
    assert len(sim.pods(name, 2)) == 1 and sim.phase(name) == "Degraded"
    await sim.patch(name, with_abort)
    await sim.until(lambda: sim.status(name).abort)
    st = sim.status(name)
    assert st.phase == "Degraded" and st.message.startswith("RolloutAborted: ")
    assert len(st.conditions) == 4, [c.type for c in st.conditions]
    await sim.advance(3)
    assert sim.pods(name, 2) == []


async def test_blue_green_progress_deadline_abort() -> None:
    """§6.13 TestBlueGreenProgressDeadlineAbort: the abort message names the ReplicaSet."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    await sim.patch(name, {"spec": {"progressDeadlineSeconds": 30, "progressDeadlineAbort": True}})
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.patch(
        name,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "rollouts-demo", "image": "argoproj/rollouts-demo:nope"}]}
                }
            }
        },
    )
    waited = await sim.until(lambda: sim.status(name).abort)
    assert 30 <= waited <= 31
    rs2 = sim.rs(name, 2)
    assert sim.status(name).message == (
        f'RolloutAborted: Rollout aborted update to revision 2: ReplicaSet "{rs2.name}" has timed out progressing.'
    )
    assert sim.pods(name, 2)[0].status.reason == "ImagePullBackOff"


async def test_blue_green_scale_down_on_abort() -> None:
    """§6.14 TestBlueGreenScaleDownOnAbort: abortScaleDownDelaySeconds 1."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenScaleDownOnAbort.yaml")
    name = "bluegreen-scaledown-on-abort"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.sizes(name) == {1: 2, 2: 1}
    await sim.abort(name)
    assert sim.phase(name) == "Degraded"
    await sim.advance(3)
    assert sim.sizes(name) == {1: 2, 2: 0}
    assert sim.selector("bluegreen-preview-replicas-active") == sim.hash(name, 1)
    assert sim.selector("bluegreen-preview-replicas-preview") == sim.hash(name, 2)


async def test_blue_green_abort() -> None:
    """§6.15 TestBlueGreenAbort: an abort after the switch moves the active Service back."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenPostPromotionFail.yaml")
    await sim.apply(E2E.parent / "argo-rollouts/test/e2e/functional/analysistemplate-sleep-job.yaml")
    name = "post-promotion-fail"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.promote(name)
    await sim.until(lambda: sim.selector("post-promotion-fail-active") == sim.hash(name, 2))
    await sim.abort(name)
    st = sim.status(name)
    assert sim.selector("post-promotion-fail-active") == sim.hash(name, 1)
    assert (st.phase, st.message) == ("Degraded", "RolloutAborted: Rollout aborted update to revision 2")
    assert st.selector == f"app=post-promotion-fail,rollouts-pod-template-hash={sim.hash(name, 1)}"


async def test_blue_green_duration_abort_retry() -> None:
    """§6.16 TestBlueGreenDuration_Abort/_Retry: abort from the pause, then retry pauses again."""
    sim = Sim()
    await sim.apply(CANONICAL)
    name = "rollout-bluegreen"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.abort(name)
    assert sim.phase(name) == "Degraded"
    assert sim.status(name).completion == "Aborted"
    await sim.advance(60)  # the preview is scaled down after the default 30 s abort delay
    assert sim.sizes(name) == {1: 2, 2: 0}
    before = len(sim.history[name])
    await sim.retry(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert sim.history[name][before:] == [
        ("Progressing", "more replicas need to be updated"),
        ("Progressing", "active service cutover pending"),
        ("Paused", "BlueGreenPause"),
    ]
    assert sim.sizes(name) == {1: 2, 2: 2}
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector("rollout-bluegreen-active") == sim.hash(name, 2)
