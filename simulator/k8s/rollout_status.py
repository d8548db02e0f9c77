"""A Rollout's status in Argo's shape (BLUEGREEN_SPEC §3), typed, with JSON both ways."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from simulator.k8s.clock import format_time, parse_time

__all__ = ["Condition", "PauseCondition", "Phase", "RolloutStatus", "RunStatus"]


class Phase(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    DEGRADED = "Degraded"


@dataclass(frozen=True)
class PauseCondition:
    reason: str  # BlueGreenPause | InconclusiveAnalysisRun
    start_time: float

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "startTime": format_time(self.start_time)}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    last_transition: float
    last_update: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": format_time(self.last_transition),
            "lastUpdateTime": format_time(self.last_update),
        }


@dataclass(frozen=True)
class RunStatus:
    """`status.blueGreen.pre/postPromotionAnalysisRunStatus`."""

    name: str
    status: str
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "status": self.status}
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class RolloutStatus:
    phase: Phase = Phase.PROGRESSING
    message: str = ""
    observed_generation: int = 0
    current_pod_hash: str = ""
    stable_rs: str = ""
    active_selector: str = ""
    preview_selector: str = ""
    scale_up_preview_checkpoint: bool = False
    pre_promotion: RunStatus | None = None
    post_promotion: RunStatus | None = None
    pause_conditions: list[PauseCondition] = field(default_factory=list)
    controller_pause: bool = False
    abort: bool = False
    aborted_at: float | None = None
    promote_full: bool = False
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    hpa_replicas: int = 0
    selector: str = ""
    conditions: list[Condition] = field(default_factory=list)
    workload_observed_generation: str = ""
    restarted_at: float | None = None  # the spec.restartAt whose restart is complete
    completion: str = ""  # status.duration completionStatus-like: Promoted, FastPromoted, Aborted, ...
    # Not in Argo's status: why the current update is fast-tracked ("Fast rollback" / "Rollback within
    # window"), latched when the template changes because Argo reads it from an annotation it removes.
    fast_track: str = ""
    # Not in Argo's status either: the reason of the current abort, which Argo keeps only in the
    # Progressing condition's message.
    abort_message: str = ""

    def copy(self) -> RolloutStatus:
        return replace(self, pause_conditions=list(self.pause_conditions), conditions=list(self.conditions))

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def pause_condition(self, reason: str) -> PauseCondition | None:
        return next((p for p in self.pause_conditions if p.reason == reason), None)

    def set_condition(
        self, type_: str, status: str, reason: str, message: str, now: float, *, touch: bool = False
    ) -> None:
        """Argo's SetRolloutCondition: the same status keeps the transition time; `touch` refreshes
        lastUpdateTime even when nothing else changed (progress was seen)."""
        old = self.condition(type_)
        if old and old.status == status and old.reason == reason and old.message == message and not touch:
            return
        transition = old.last_transition if old and old.status == status else now
        new = Condition(type_, status, reason, message, transition, now)
        self.conditions = [c for c in self.conditions if c.type != type_] + [new]

    def to_json(self) -> dict[str, Any]:
        blue_green: dict[str, Any] = {
            "activeSelector": self.active_selector,
            "previewSelector": self.preview_selector,
            "scaleUpPreviewCheckPoint": self.scale_up_preview_checkpoint,
        }
        if self.pre_promotion:
            blue_green["prePromotionAnalysisRunStatus"] = self.pre_promotion.to_json()
        if self.post_promotion:
            blue_green["postPromotionAnalysisRunStatus"] = self.post_promotion.to_json()
        out: dict[str, Any] = {
            "phase": str(self.phase),
            "message": self.message,
            "observedGeneration": str(self.observed_generation),
            "currentPodHash": self.current_pod_hash,
            "stableRS": self.stable_rs,
            "blueGreen": blue_green,
            "pauseConditions": [p.to_json() for p in self.pause_conditions] or None,
            "controllerPause": self.controller_pause,
            "abort": self.abort,
            "replicas": self.replicas,
            "updatedReplicas": self.updated_replicas,
            "readyReplicas": self.ready_replicas,
            "availableReplicas": self.available_replicas,
            "HPAReplicas": self.hpa_replicas,
            "selector": self.selector,
            "conditions": [c.to_json() for c in self.conditions],
        }
        if self.aborted_at is not None:
            out["abortedAt"] = format_time(self.aborted_at)
        if self.promote_full:
            out["promoteFull"] = True
        if self.completion:
            out["completionStatus"] = self.completion
        if self.restarted_at is not None:
            out["restartedAt"] = format_time(self.restarted_at)
        if self.workload_observed_generation:
            out["workloadObservedGeneration"] = self.workload_observed_generation
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutStatus:
        """For fixtures captured from a real cluster (e.g. Argo's `get` golden test data)."""
        bg = data.get("blueGreen") or {}

        def run(key: str) -> RunStatus | None:
            raw = bg.get(key)
            return RunStatus(raw["name"], raw.get("status", ""), raw.get("message", "")) if raw else None

        pauses = data.get("pauseConditions") or []
        phase, message = Phase.PROGRESSING, ""
        if data.get("phase") in Phase.__members__.values():
            phase, message = Phase(data["phase"]), data.get("message", "")
        elif pauses:  # captured before Argo stored the phase: derive it as its client does
            phase, message = Phase.PAUSED, pauses[0]["reason"]
        return cls(
            phase=phase,
            message=message,
            observed_generation=int(data.get("observedGeneration") or 0),
            current_pod_hash=data.get("currentPodHash", ""),
            stable_rs=data.get("stableRS", ""),
            active_selector=bg.get("activeSelector", ""),
            preview_selector=bg.get("previewSelector", ""),
            scale_up_preview_checkpoint=bool(bg.get("scaleUpPreviewCheckPoint", False)),
            pre_promotion=run("prePromotionAnalysisRunStatus"),
            post_promotion=run("postPromotionAnalysisRunStatus"),
            pause_conditions=[
                PauseCondition(p["reason"], parse_time(p["startTime"])) for p in data.get("pauseConditions") or []
            ],
            controller_pause=bool(data.get("controllerPause", False)),
            abort=bool(data.get("abort", False)),
            replicas=int(data.get("replicas", 0)),
            updated_replicas=int(data.get("updatedReplicas", 0)),
            ready_replicas=int(data.get("readyReplicas", 0)),
            available_replicas=int(data.get("availableReplicas", 0)),
            hpa_replicas=int(data.get("HPAReplicas", 0)),
            selector=data.get("selector", ""),
            restarted_at=parse_time(data["restartedAt"]) if data.get("restartedAt") else None,
            conditions=[
                Condition(
                    c["type"],
                    c["status"],
                    c.get("reason", ""),
                    c.get("message", ""),
                    parse_time(c["lastTransitionTime"]),
                    parse_time(c.get("lastUpdateTime", c["lastTransitionTime"])),
                )
                for c in data.get("conditions") or []
            ],
        )
