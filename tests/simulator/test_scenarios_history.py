"""BLUEGREEN_SPEC §6 scenarios 30-38 and 45: scale-down delays and limits, rollbacks, superseding, scaling."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from simulator import operations
from simulator.k8s.clock import parse_time
from tests.simulator.harness import E2E, FUNCTIONAL, Sim, patches, read


async def _duration(name: str, blue_green: Mapping[str, object] | None = None, **spec: object) -> Sim:
    """Argo's duration tests: bluegreen-duration-template.yaml with ROLLOUT_NAME replaced."""
    sim = Sim()
    text = read(FUNCTIONAL / "bluegreen-duration-template.yaml").replace("ROLLOUT_NAME", name)
    await sim.apply_text(text)
    patch: dict[str, object] = dict(spec)
    if blue_green:
        patch["strategy"] = {"blueGreen": dict(blue_green)}
    if patch:
        await sim.patch(name, {"spec": patch})
    await sim.until(lambda: sim.phase(name) == "Healthy")
    return sim


async def _version(sim: Sim, name: str, version: str) -> None:
    """Argo's `UpdateVersion(v)`: the template annotation `version: v`."""
    await sim.patch(name, {"spec": {"template": {"metadata": {"annotations": {"version": version}}}}})


async def test_blue_green_scale_down_delay() -> None:
    """§6.30: delay 86400, scaleDownDelayRevisionLimit 2, then lowered to 1."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenScaleDownDelay.yaml")
    name = "bluegreen-scaledowndelay"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Healthy" and sim.status(name).stable_rs == sim.hash(name, 2))
    assert sim.sizes(name) == {1: 1, 2: 1}
    assert sim.counts(name) == "1/2/1/1/1"
    for revision in (3, 4):
        await sim.update(name)
        await sim.until(lambda rev=revision: sim.status(name).stable_rs == sim.hash(name, rev))
    assert sim.sizes(name) == {1: 0, 2: 1, 3: 1, 4: 1}
    assert sim.counts(name) == "1/3/1/1/1"
    (lower,) = patches("TestBlueGreenScaleDownDelay")
    await sim.patch(name, lower)
    assert sim.sizes(name) == {1: 0, 2: 0, 3: 1, 4: 1}
    assert sim.counts(name) == "1/2/1/1/1"


async def test_blue_green_add_scale_down_delay() -> None:
    """§6.31: the old ReplicaSet gets `scale-down-deadline` = promotion + 30 s."""
    sim = await _duration("add-delay")
    await _version(sim, "add-delay", "2")
    await sim.until(lambda: "scale-down-deadline" in sim.rs("add-delay", 1).metadata.annotations)
    deadline = parse_time(sim.rs("add-delay", 1).metadata.annotations["scale-down-deadline"])
    assert deadline == sim.cluster.clock.now() + 30


async def test_blue_green_scale_down_limit() -> None:
    """§6.32: with limit 1 and two revisions waiting, the older one goes to 0 at once."""
    sim = await _duration("limit", {"scaleDownDelaySeconds": 600})
    await _version(sim, "limit", "2")
    await sim.until(lambda: sim.status("limit").stable_rs == sim.hash("limit", 2))
    await _version(sim, "limit", "3")
    await sim.until(lambda: sim.status("limit").stable_rs == sim.hash("limit", 3))
    assert sim.sizes("limit") == {1: 1, 2: 1, 3: 1}
    await sim.patch("limit", {"spec": {"strategy": {"blueGreen": {"scaleDownDelayRevisionLimit": 1}}}})
    assert sim.sizes("limit") == {1: 0, 2: 1, 3: 1}


async def test_blue_green_duration_superseded_rollback() -> None:
    """§6.33 TestFastRollback: back to a revision still inside its scale-down delay is instant."""
    sim = await _duration("fast", {"autoPromotionEnabled": False})
    await _version(sim, "fast", "2")
    await sim.until(lambda: sim.phase("fast") == "Paused")
    await sim.promote("fast")
    await sim.until(lambda: sim.phase("fast") == "Healthy")
    await _version(sim, "fast", "3")
    await sim.until(lambda: sim.phase("fast") == "Paused")
    start = len(sim.cluster.events)
    await sim.patch("fast", {"spec": {"template": {"metadata": {"annotations": None}}}})  # back to v1
    assert sim.phase("fast") == "Healthy"
    st = sim.status("fast")
    assert st.stable_rs == st.active_selector == sim.hash("fast", 4)
    assert sim.rs("fast", 4).metadata.annotations["rollout.argoproj.io/revision-history"] == "1"
    assert st.completion == "FastRolledBack"
    assert [e.reason for e in sim.cluster.events[start:]] == [
        "SwitchService",  # preview, first in a pass as in Argo
        "RolloutNotCompleted",
        "SwitchService",  # active, without pause or analysis
        "RolloutCompleted",
    ]
    assert sim.cluster.events[-1].message.endswith(": Fast rollback")


async def test_blue_green_duration_superseded_rollback_to_stable() -> None:
    """§6.34: delay 0; paused on v2, template back to the stable v1 => Healthy immediately."""
    sim = await _duration("to-stable", {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 0})
    await _version(sim, "to-stable", "2")
    await sim.until(lambda: sim.phase("to-stable") == "Paused")
    await sim.patch("to-stable", {"spec": {"template": {"metadata": {"annotations": None}}}})
    assert sim.phase("to-stable") == "Healthy"
    assert sim.status("to-stable").stable_rs == sim.hash("to-stable", 3)  # v1, renumbered


@pytest.mark.parametrize(
    ("window", "fast"),
    [(1, False), (3, True)],
    ids=["TestBlueGreenDuration_RollbackOutsideWindow", "TestBlueGreenDuration_RollbackInsideWindow"],
)
async def test_blue_green_duration_rollback_window(window: int, fast: bool) -> None:
    """§6.35/§6.36: rollbackWindow decides whether going back to v1 from v4 needs the manual gate."""
    name = "window"
    bg = {"autoPromotionEnabled": False, "scaleDownDelaySeconds": 0}
    sim = await _duration(name, bg, revisionHistoryLimit=5, rollbackWindow={"revisions": window})
    for version in ("2", "3"):
        await _version(sim, name, version)
        await sim.until(lambda: sim.phase(name) == "Paused")
        await sim.promote(name)
        await sim.until(lambda: sim.phase(name) == "Healthy")
    await _version(sim, name, "4")
    await sim.until(lambda: sim.phase(name) == "Paused")
    await sim.patch(name, {"spec": {"template": {"metadata": {"annotations": None}}}})
    if fast:
        await sim.until(lambda: sim.phase(name) == "Healthy")
        assert sim.status(name).completion == "FastRolledBack"
    else:
        await sim.until(lambda: sim.phase(name) == "Paused")
        await sim.promote(name)
        await sim.until(lambda: sim.phase(name) == "Healthy")
        assert sim.status(name).completion == "Promoted"
    assert sim.status(name).stable_rs == sim.hash(name, 5)


async def test_blue_green_duration_superseded_rollout() -> None:
    """§6.37: a new revision while paused moves the preview to it; promote goes to the newest."""
    sim = await _duration("supersede", {"autoPromotionEnabled": False})
    await _version(sim, "supersede", "2")
    await sim.until(lambda: sim.phase("supersede") == "Paused")
    await _version(sim, "supersede", "3")
    assert sim.selector("supersede-preview") == sim.hash("supersede", 3)
    await sim.until(lambda: sim.phase("supersede") == "Paused")
    assert sim.selector("supersede-active") == sim.hash("supersede", 1)
    assert "scale-down-deadline" in sim.rs("supersede", 2).metadata.annotations
    await sim.promote("supersede")
    await sim.until(lambda: sim.phase("supersede") == "Healthy")
    assert sim.selector("supersede-active") == sim.hash("supersede", 3)


async def test_blue_green_duration_scaling_only() -> None:
    """§6.38: replicas 1 -> 2 resizes; no new revision, no pause."""
    sim = await _duration("scaling", {"autoPromotionEnabled": False})
    await sim.patch("scaling", {"spec": {"replicas": 2}})
    await sim.until(lambda: sim.counts("scaling") == "2/2/2/2/2")
    assert list(sim.replica_sets("scaling")) == [1]
    assert sim.phase("scaling") == "Healthy"


@pytest.mark.parametrize(
    ("delay", "down_after"),
    [(None, 30), (0, None), (5, 5)],
    ids=["nil-30s", "zero-never", "five-seconds"],
)
async def test_abort_scale_down_delay_table(delay: int | None, down_after: int | None) -> None:
    """§6.45 docs/features/scaledown-aborted-rs.md: the preview after an abort."""
    bg: dict[str, object] = {"autoPromotionEnabled": False}
    if delay is not None:
        bg["abortScaleDownDelaySeconds"] = delay
    sim = await _duration("aborted", bg)
    await _version(sim, "aborted", "2")
    await sim.until(lambda: sim.phase("aborted") == "Paused")
    operations.abort(sim.store, "aborted")
    if down_after is None:
        await sim.advance(3600)
        assert sim.sizes("aborted")[2] == 1
    else:
        took = await sim.until(lambda: sim.sizes("aborted")[2] == 0)
        assert took == down_after
