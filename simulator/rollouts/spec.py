"""A typed view of a Rollout's `spec` with Argo's defaults (BLUEGREEN_SPEC §1).

Parsing refuses what Argo's CRD schema refuses (wrong types, unknown fields) and lists the fields
Argo knows but the simulator ignores. Checks that need other objects or that Argo reports as
`InvalidSpec` on a stored Rollout live in `simulator.rollouts.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.k8s.clock import parse_time
from simulator.k8s.fields import Fields

__all__ = ["AnalysisArg", "BlueGreenSpec", "EphemeralMetadata", "RolloutAnalysis", "RolloutSpec", "parse_rollout_spec"]

DEFAULT_SCALE_DOWN_DELAY = 30
DEFAULT_ABORT_SCALE_DOWN_DELAY = 30


@dataclass(frozen=True)
class AnalysisArg:
    name: str
    value: str | None = None
    pod_template_hash: str | None = None  # valueFrom.podTemplateHashValue: Latest | Stable
    field_path: str | None = None  # valueFrom.fieldRef.fieldPath


@dataclass(frozen=True)
class RolloutAnalysis:
    templates: tuple[str, ...] = ()
    args: tuple[AnalysisArg, ...] = ()
    dry_run: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EphemeralMetadata:
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BlueGreenSpec:
    active_service: str
    preview_service: str = ""
    auto_promotion_enabled: bool = True
    auto_promotion_seconds: int = 0
    preview_replica_count: int | None = None
    scale_down_delay_seconds: int = DEFAULT_SCALE_DOWN_DELAY
    scale_down_delay_revision_limit: int | None = None
    abort_scale_down_delay_seconds: int = DEFAULT_ABORT_SCALE_DOWN_DELAY
    pre_promotion_analysis: RolloutAnalysis | None = None
    post_promotion_analysis: RolloutAnalysis | None = None
    preview_metadata: EphemeralMetadata | None = None
    active_metadata: EphemeralMetadata | None = None

    @property
    def wants_pause(self) -> bool:
        return not self.auto_promotion_enabled or self.auto_promotion_seconds > 0


@dataclass(frozen=True)
class RolloutSpec:
    replicas: int = 1
    selector: dict[str, str] = field(default_factory=dict)
    template: dict[str, Any] | None = None
    workload_ref: str | None = None  # Deployment name
    workload_scale_down: str = "never"  # never | onsuccess | progressively
    min_ready_seconds: int = 0
    revision_history_limit: int = 10
    progress_deadline_seconds: int = 600
    progress_deadline_abort: bool = False
    paused: bool = False
    restart_at: float | None = None  # spec.restartAt (epoch seconds)
    rollback_window: int | None = None
    successful_run_history_limit: int = 5
    unsuccessful_run_history_limit: int = 5
    blue_green: BlueGreenSpec | None = None
    canary: bool = False


_RS_IMPLEMENTED = {
    "replicas",
    "selector",
    "template",
    "workloadRef",
    "analysis",
    "minReadySeconds",
    "revisionHistoryLimit",
    "paused",
    "progressDeadlineSeconds",
    "progressDeadlineAbort",
    "rollbackWindow",
    "strategy",
    "restartAt",
}
_RS_UNIMPLEMENTED: set[str] = set()
_BG_IMPLEMENTED = {
    "activeService",
    "previewService",
    "autoPromotionEnabled",
    "autoPromotionSeconds",
    "previewReplicaCount",
    "scaleDownDelaySeconds",
    "scaleDownDelayRevisionLimit",
    "abortScaleDownDelaySeconds",
    "prePromotionAnalysis",
    "postPromotionAnalysis",
    "previewMetadata",
    "activeMetadata",
}
# maxUnavailable only bounds restarts (spec §1.1), antiAffinity needs nodes: both accepted, neither simulated.
_BG_UNIMPLEMENTED = {"antiAffinity", "maxUnavailable"}


def _analysis(f: Fields) -> RolloutAnalysis:
    f.known({"templates", "args", "dryRun"}, {"measurementRetention", "analysisRunMetadata"})
    templates: list[str] = []
    for t in f.items("templates"):
        t.known({"templateName"}, {"clusterScope"})
        templates.append(t.string("templateName", required=True))
    args: list[AnalysisArg] = []
    for a in f.items("args"):
        a.known({"name", "value", "valueFrom"})
        name = a.string("name", required=True)
        if a.has("valueFrom"):
            vf = a.sub("valueFrom")
            vf.known({"podTemplateHashValue", "fieldRef"})
            hash_value = vf.string("podTemplateHashValue") or None
            if hash_value not in (None, "Latest", "Stable"):
                vf.problem("podTemplateHashValue", f"must be Latest or Stable, got {hash_value!r}")
            field_path = vf.sub("fieldRef").string("fieldPath") or None
            args.append(AnalysisArg(name, pod_template_hash=hash_value, field_path=field_path))
        else:
            args.append(AnalysisArg(name, value=a.string("value")))
    dry_run = tuple(d.string("metricName", required=True) for d in f.items("dryRun"))
    meta = f.sub("analysisRunMetadata")
    return RolloutAnalysis(
        tuple(templates), tuple(args), dry_run, labels=meta.str_map("labels"), annotations=meta.str_map("annotations")
    )


def _metadata(f: Fields) -> EphemeralMetadata:
    f.known({"labels", "annotations"})
    return EphemeralMetadata(labels=f.str_map("labels"), annotations=f.str_map("annotations"))


def _blue_green(f: Fields) -> BlueGreenSpec:
    f.known(_BG_IMPLEMENTED, _BG_UNIMPLEMENTED)
    pre = _analysis(f.sub("prePromotionAnalysis")) if f.has("prePromotionAnalysis") else None
    post = _analysis(f.sub("postPromotionAnalysis")) if f.has("postPromotionAnalysis") else None
    return BlueGreenSpec(
        active_service=f.string("activeService"),
        preview_service=f.string("previewService"),
        auto_promotion_enabled=bool(f.boolean("autoPromotionEnabled", True)),
        auto_promotion_seconds=f.integer("autoPromotionSeconds", 0, minimum=0) or 0,
        preview_replica_count=f.integer("previewReplicaCount", None, minimum=0),
        scale_down_delay_seconds=f.integer("scaleDownDelaySeconds", DEFAULT_SCALE_DOWN_DELAY, minimum=0) or 0,
        scale_down_delay_revision_limit=f.integer("scaleDownDelayRevisionLimit", None, minimum=0),
        abort_scale_down_delay_seconds=f.integer(
            "abortScaleDownDelaySeconds", DEFAULT_ABORT_SCALE_DOWN_DELAY, minimum=0
        )
        or 0,
        pre_promotion_analysis=pre,
        post_promotion_analysis=post,
        preview_metadata=_metadata(f.sub("previewMetadata")) if f.has("previewMetadata") else None,
        active_metadata=_metadata(f.sub("activeMetadata")) if f.has("activeMetadata") else None,
    )


def parse_rollout_spec(spec: dict[str, Any]) -> tuple[RolloutSpec, list[str], list[str]]:
    """(spec, problems, notices); problems are schema errors that make the manifest unacceptable."""
    f = Fields.root(spec, "spec")
    f.known(_RS_IMPLEMENTED, _RS_UNIMPLEMENTED)
    selector = f.sub("selector")
    selector.known({"matchLabels"}, {"matchExpressions"})
    strategy = f.sub("strategy")
    strategy.known({"blueGreen", "canary"})
    blue_green = _blue_green(strategy.sub("blueGreen")) if strategy.has("blueGreen") else None
    canary = strategy.has("canary")
    if canary:
        strategy.notice("canary", "is not implemented by the simulator (blueGreen only)")
    workload = f.sub("workloadRef")
    workload_ref = None
    scale_down = "never"
    if f.has("workloadRef"):
        workload.known({"apiVersion", "kind", "name", "scaleDown"})
        kind = workload.string("kind", "Deployment")
        if kind != "Deployment":
            workload.notice("kind", f"{kind!r} is not implemented (Deployment only)")
        workload_ref = workload.string("name", required=True)
        scale_down = workload.string("scaleDown", "never")
        if scale_down not in ("never", "onsuccess", "progressively"):
            workload.problem("scaleDown", f"must be never, onsuccess or progressively, got {scale_down!r}")
    window = f.sub("rollbackWindow")
    window.known({"revisions"})
    history = f.sub("analysis")
    history.known({"successfulRunHistoryLimit", "unsuccessfulRunHistoryLimit"})
    template = spec.get("template")
    if template is not None and not isinstance(template, dict):
        f.problem("template", "expected a mapping")
        template = None
    restart_at = None
    if spec.get("restartAt") is not None:
        try:
            restart_at = parse_time(str(spec["restartAt"]))
        except ValueError:
            f.problem("restartAt", f"expected an RFC 3339 time, got {spec['restartAt']!r}")
    parsed = RolloutSpec(
        replicas=f.integer("replicas", 1) or 0,
        selector=selector.str_map("matchLabels"),
        template=template or None,
        workload_ref=workload_ref,
        workload_scale_down=scale_down,
        min_ready_seconds=f.integer("minReadySeconds", 0, minimum=0) or 0,
        revision_history_limit=f.integer("revisionHistoryLimit", 10, minimum=0) or 0,
        progress_deadline_seconds=f.integer("progressDeadlineSeconds", 600, minimum=1) or 600,
        progress_deadline_abort=bool(f.boolean("progressDeadlineAbort", False)),
        paused=bool(f.boolean("paused", False)),
        restart_at=restart_at,
        rollback_window=window.integer("revisions", None, minimum=0),
        successful_run_history_limit=history.integer("successfulRunHistoryLimit", 5, minimum=0) or 0,
        unsuccessful_run_history_limit=history.integer("unsuccessfulRunHistoryLimit", 5, minimum=0) or 0,
        blue_green=blue_green,
        canary=canary,
    )
    return parsed, f.problems, f.notices
