"""The blue/green decision as a pure function: tables of (observed state, now) -> actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from simulator.k8s.clock import VIRTUAL_EPOCH, format_time
from simulator.k8s.hashing import pod_template_hash
from simulator.k8s.objects import (
    ANNOTATION_DEADLINE,
    ANNOTATION_DESIRED,
    ANNOTATION_REVISION,
    HASH_LABEL,
    ObjectMeta,
    ReplicaSet,
    ReplicaSetStatus,
    Rollout,
    Service,
)
from simulator.k8s.rollout_status import PauseCondition, Phase, RolloutStatus
from simulator.rollouts.actions import (
    CreateReplicaSet,
    Observed,
    SetServiceSelector,
    UpdateReplicaSet,
)
from simulator.rollouts.plan import plan_rollout

NOW = VIRTUAL_EPOCH + 1000


def template(color: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "demo", "image": f"argoproj/rollouts-demo:{color}"}]},
    }


def rollout(color: str, paused: bool = False, **blue_green: Any) -> Rollout:
    spec = {
        "paused": paused,
        "replicas": 2,
        "selector": {"matchLabels": {"app": "demo"}},
        "template": template(color),
        "strategy": {"blueGreen": {"activeService": "active", "previewService": "preview", **blue_green}},
    }
    return Rollout(metadata=ObjectMeta(name="demo"), spec=spec)


H_BLUE = pod_template_hash(template("blue"))
H_GREEN = pod_template_hash(template("green"))


def rs(
    color: str, revision: int, replicas: int, available: int | None = None, annotations: dict[str, str] | None = None
) -> ReplicaSet:
    pod_hash = pod_template_hash(template(color))
    ready = replicas if available is None else available
    return ReplicaSet(
        metadata=ObjectMeta(
            name=f"demo-{pod_hash}",
            labels={"app": "demo", HASH_LABEL: pod_hash},
            annotations={ANNOTATION_REVISION: str(revision), ANNOTATION_DESIRED: "2", **(annotations or {})},
            owner="Rollout/demo",
            sequence=revision,
        ),
        spec={"replicas": replicas, "template": template(color)},
        status=ReplicaSetStatus(replicas, ready, ready),
    )


def service(name: str, pod_hash: str = "") -> Service:
    selector = {"app": "demo", **({HASH_LABEL: pod_hash} if pod_hash else {})}
    return Service(metadata=ObjectMeta(name=name), spec={"selector": selector})


@dataclass
class Case:
    id: str
    rollout: Rollout
    replica_sets: list[ReplicaSet]
    active: str
    preview: str
    status: dict[str, Any] = field(default_factory=dict)
    expect_switch: dict[str, str] = field(default_factory=dict)  # service -> hash
    expect_scale: dict[int, int] = field(default_factory=dict)  # revision -> replicas
    expect_create: bool = False
    phase: str | None = None
    message: str | None = None


def steady(**status: Any) -> dict[str, Any]:
    base = {"current_pod_hash": H_GREEN, "stable_rs": H_BLUE, "active_selector": H_BLUE, "preview_selector": H_GREEN}
    return {**base, **status}


CASES = [
    Case(
        "initial-deploy-creates-rev1-and-switches-preview",
        rollout("blue", autoPromotionEnabled=False),
        [],
        active="",
        preview="",
        expect_create=True,
        expect_switch={"preview": H_BLUE},
        phase="Progressing",
    ),
    Case(
        "initial-deploy-saturated-switches-active-without-pause",
        rollout("blue", autoPromotionEnabled=False),
        [rs("blue", 1, 2)],
        active="",
        preview=H_BLUE,
        status={"current_pod_hash": H_BLUE, "stable_rs": H_BLUE, "preview_selector": H_BLUE},
        expect_switch={"active": H_BLUE},
        phase="Healthy",
    ),
    Case(
        "new-template-creates-rev2-previews-it-holds-stable",
        rollout("green"),
        [rs("blue", 1, 2)],
        active=H_BLUE,
        preview=H_BLUE,
        status={"current_pod_hash": H_BLUE, "stable_rs": H_BLUE, "active_selector": H_BLUE},
        expect_create=True,
        expect_switch={"preview": H_GREEN},
        phase="Progressing",
        message="more replicas need to be updated",
    ),
    Case(
        "rev2-scaled-to-full-size",
        rollout("green"),
        [rs("blue", 1, 2), rs("green", 2, 0)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(),
        expect_scale={2: 2},
    ),
    Case(
        "saturated-auto-promotion-switches-and-marks-stable",
        rollout("green"),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(),
        expect_switch={"active": H_GREEN},
        phase="Healthy",
    ),
    Case(
        "saturated-manual-gate-pauses",
        rollout("green", autoPromotionEnabled=False),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(),
        phase="Paused",
        message="BlueGreenPause",
    ),
    Case(
        "not-available-yet-no-switch",
        rollout("green"),
        [rs("blue", 1, 2), rs("green", 2, 2, available=1)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(),
        message="active service cutover pending",
    ),
    Case(
        "timer-not-expired-stays-paused",
        rollout("green", autoPromotionSeconds=30),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(pause_conditions=[PauseCondition("BlueGreenPause", NOW - 29)], controller_pause=True),
        phase="Paused",
    ),
    Case(
        "timer-expired-promotes",
        rollout("green", autoPromotionSeconds=30),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(pause_conditions=[PauseCondition("BlueGreenPause", NOW - 30)], controller_pause=True),
        expect_switch={"active": H_GREEN},
        phase="Healthy",
    ),
    Case(
        "user-pause-beats-expired-timer",
        rollout("green", autoPromotionSeconds=30, paused=True),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(pause_conditions=[PauseCondition("BlueGreenPause", NOW - 60)], controller_pause=True),
        phase="Paused",
        message="manually paused",
    ),
    Case(
        "human-promote-completes-manual-pause",
        rollout("green", autoPromotionEnabled=False),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_BLUE,
        preview=H_GREEN,
        status=steady(controller_pause=True),
        expect_switch={"active": H_GREEN},
        phase="Healthy",
    ),
    Case(
        "abort-switches-active-back-to-stable",
        rollout("green"),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_GREEN,
        preview=H_GREEN,
        status=steady(active_selector=H_GREEN, abort=True),
        expect_switch={"active": H_BLUE},
        phase="Degraded",
        message="RolloutAborted: Rollout aborted update to revision 2",
    ),
    Case(
        "old-rs-gets-deadline-after-promotion",
        rollout("green"),
        [rs("blue", 1, 2), rs("green", 2, 2)],
        active=H_GREEN,
        preview=H_GREEN,
        status=steady(stable_rs=H_GREEN, active_selector=H_GREEN),
        phase="Healthy",
    ),
    Case(
        "old-rs-deadline-passed-scaled-to-zero",
        rollout("green"),
        [rs("blue", 1, 2, annotations={ANNOTATION_DEADLINE: format_time(NOW - 1)}), rs("green", 2, 2)],
        active=H_GREEN,
        preview=H_GREEN,
        status=steady(stable_rs=H_GREEN, active_selector=H_GREEN),
        expect_scale={1: 0},
        phase="Healthy",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    ro = case.rollout
    ro.status = RolloutStatus(**case.status) if case.status else None
    observed = Observed(
        replica_sets=tuple(case.replica_sets),
        services={"active": service("active", case.active), "preview": service("preview", case.preview)},
    )
    plan = plan_rollout(ro, observed, NOW)
    switches = {a.service: a.pod_hash for a in plan.actions if isinstance(a, SetServiceSelector)}
    assert switches == case.expect_switch
    revisions = {r.name: r.revision for r in case.replica_sets}
    scales = {
        revisions[a.name]: a.replicas
        for a in plan.actions
        if isinstance(a, UpdateReplicaSet)
        and a.replicas is not None
        and a.name in revisions
        and a.replicas != next(r.replicas for r in case.replica_sets if r.name == a.name)
    }
    assert scales == case.expect_scale
    assert any(isinstance(a, CreateReplicaSet) for a in plan.actions) == case.expect_create
    if case.phase is not None:
        assert plan.status.phase == Phase(case.phase)
    if case.message is not None:
        assert plan.status.message == case.message


def test_plan_is_pure() -> None:
    """The same inputs give the same plan, and the inputs are not modified."""
    ro = rollout("green")
    ro.status = RolloutStatus(**steady())
    observed = Observed(
        replica_sets=(rs("blue", 1, 2), rs("green", 2, 2)),
        services={"active": service("active", H_BLUE), "preview": service("preview", H_GREEN)},
    )
    before = (ro.to_json(), [r.to_json() for r in observed.replica_sets])
    first, second = plan_rollout(ro, observed, NOW), plan_rollout(ro, observed, NOW)
    assert first.actions == second.actions and first.status.to_json() == second.status.to_json()
    assert (ro.to_json(), [r.to_json() for r in observed.replica_sets]) == before


def test_deadline_annotation_one_pass_after_promotion() -> None:
    """§6.31 TestBlueGreenAddScaleDownDelay: scale-down-deadline = now + scaleDownDelaySeconds."""
    ro = rollout("green", scaleDownDelaySeconds=45)
    ro.status = RolloutStatus(**steady(stable_rs=H_GREEN, active_selector=H_GREEN))
    observed = Observed(
        replica_sets=(rs("blue", 1, 2), rs("green", 2, 2)),
        services={"active": service("active", H_GREEN), "preview": service("preview", H_GREEN)},
    )
    plan = plan_rollout(ro, observed, NOW)
    deadlines = [a.annotations.get(ANNOTATION_DEADLINE) for a in plan.actions if isinstance(a, UpdateReplicaSet)]
    assert deadlines == [format_time(NOW + 45)]
    assert plan.requeue_at == NOW + 45
