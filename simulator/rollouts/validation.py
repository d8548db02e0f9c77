"""The checks Argo reports as `InvalidSpec` on a stored Rollout (spec §1.3).

They depend on other objects (Services, AnalysisTemplates, a Deployment), so they run on every
reconcile: creating the missing Service later heals the Rollout, as in Argo (`TestFixInvalidSpec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.analysis.spec import RunSpecError, build_run_spec, parse_metric
from simulator.k8s.objects import ANNOTATION_MANAGED_BY, HASH_LABEL, AnalysisTemplate, Deployment, Rollout, Service
from simulator.rollouts.spec import RolloutAnalysis, RolloutSpec

__all__ = ["resolve_template", "validate_rollout"]


def resolve_template(spec: RolloutSpec, deployments: Mapping[str, Deployment]) -> dict[str, Any] | None:
    if spec.workload_ref:
        deployment = deployments.get(spec.workload_ref)
        template = deployment.spec.get("template") if deployment else None
        return template if isinstance(template, dict) else None
    return spec.template


def _analysis_problem(
    where: str, analysis: RolloutAnalysis | None, templates: Mapping[str, AnalysisTemplate]
) -> str | None:
    if analysis is None or not analysis.templates:
        return None
    found: list[tuple[str, dict[str, Any]]] = []
    for name in analysis.templates:
        template = templates.get(name)
        if template is None:
            return f'{where}.templates: AnalysisTemplate "{name}" not found'
        found.append((name, template.spec))
    # Args from the Rollout that resolve at run time (valueFrom) still count as supplied.
    args = {a.name: a.value if a.value is not None else "<resolved at run time>" for a in analysis.args}
    try:
        metrics, _ = build_run_spec(found, args)
    except RunSpecError as exc:
        return f"{where}: {exc}"
    for raw in metrics:
        try:
            metric = parse_metric(raw)
        except RunSpecError as exc:
            return f"{where}: {exc}"
        if metric.effective_count is None:
            return (
                f'{where}: AnalysisTemplate has metric "{metric.name}" which runs indefinitely '
                "(interval without count): invalid for blue/green pre/post-promotion analysis"
            )
    return None


def validate_rollout(
    rollout: Rollout,
    spec: RolloutSpec,
    services: Mapping[str, Service],
    templates: Mapping[str, AnalysisTemplate],
    deployments: Mapping[str, Deployment],
) -> str | None:
    """The first reason the Rollout is invalid, or None."""
    bg = spec.blue_green
    if bg is None and not spec.canary:
        return "spec.strategy: one of blueGreen or canary is required"
    if bg is not None and spec.canary:
        return "spec.strategy: only one of blueGreen or canary may be set"
    if bg is None:
        return "spec.strategy.canary: the canary strategy is not implemented by the simulator"
    if spec.replicas < 0:
        return f"spec.replicas: must be >= 0, got {spec.replicas}"
    if spec.workload_ref and spec.template:
        return "template must be empty for workload reference rollout"
    template = resolve_template(spec, deployments)
    if spec.workload_ref and template is None:
        return f'spec.workloadRef: Deployment "{spec.workload_ref}" not found'
    if template is None:
        return "spec.template: is required"
    labels: dict[str, str] = (template.get("metadata") or {}).get("labels") or {}
    if not ((template.get("spec") or {}).get("containers")):
        return "spec.template.spec.containers: at least one container is required"
    if not spec.selector:
        # A workloadRef Rollout may take its selector from the Deployment.
        selector = (deployments[spec.workload_ref].spec.get("selector") or {}) if spec.workload_ref else {}
        if not selector.get("matchLabels"):
            return "spec.selector: is required and must not be empty"
    elif any(labels.get(k) != v for k, v in spec.selector.items()):
        return "spec.selector: `selector` does not match template `labels`"
    if spec.progress_deadline_seconds <= spec.min_ready_seconds:
        return "spec.progressDeadlineSeconds: must be greater than minReadySeconds"
    if bg.scale_down_delay_revision_limit is not None and bg.scale_down_delay_revision_limit > (
        spec.revision_history_limit
    ):
        return "spec.strategy.blueGreen.scaleDownDelayRevisionLimit: must be <= revisionHistoryLimit"
    if not bg.active_service:
        return "spec.strategy.blueGreen.activeService: is required"
    if bg.active_service == bg.preview_service:
        return "spec.strategy.blueGreen.previewService: must differ from activeService"
    for field, name in (("activeService", bg.active_service), ("previewService", bg.preview_service)):
        if not name:
            continue
        service = services.get(name)
        if service is None:
            return f'spec.strategy.blueGreen.{field}: Service "{name}" not found'
        for key, value in service.selector.items():
            if key != HASH_LABEL and labels.get(key) != value:
                return f'Service "{name}" has unmatch label "{key}" in rollout'
        manager = service.metadata.annotations.get(ANNOTATION_MANAGED_BY)
        if manager and manager != rollout.name:
            return f'Service "{name}" is managed by another Rollout ("{manager}")'
    for where, analysis in (
        ("spec.strategy.blueGreen.prePromotionAnalysis", bg.pre_promotion_analysis),
        ("spec.strategy.blueGreen.postPromotionAnalysis", bg.post_promotion_analysis),
    ):
        problem = _analysis_problem(where, analysis, templates)
        if problem:
            return problem
    return None
