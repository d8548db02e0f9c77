"""The Rollout controller: observe, decide (`simulator.rollouts.plan`, pure), apply, write status.

Also the service cleanup of §2.16: a Service that carries a hash selector for a Rollout that no
longer references it gets its plain selector back. `make_run` builds the AnalysisRun a Rollout asks
for (Argo keeps it on the rollout side too, `rollout/analysis.go`); the cluster hands it in as the run
factory, so the analysis controller never needs to know what a Rollout is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulator.analysis.spec import RunSpecError, build_run_spec
from simulator.k8s.objects import (
    ANNOTATION_MANAGED_BY,
    ANNOTATION_REVISION,
    HASH_LABEL,
    AnalysisPhase,
    AnalysisRun,
    AnalysisRunStatus,
    AnalysisTemplate,
    Deployment,
    ObjectMeta,
    Pod,
    ReplicaSet,
    Rollout,
    Service,
)
from simulator.k8s.store import NotFoundError, Store
from simulator.rollouts.actions import (
    CreateAnalysisRun,
    CreateReplicaSet,
    DeleteAnalysisRun,
    DeletePod,
    DeleteReplicaSet,
    Event,
    Observed,
    Plan,
    ScaleDeployment,
    SetServiceSelector,
    TerminateAnalysisRun,
    UpdateReplicaSet,
)
from simulator.rollouts.plan import plan_rollout
from simulator.rollouts.spec import parse_rollout_spec

__all__ = ["RolloutController", "make_run"]

RunFactory = Callable[[Rollout, CreateAnalysisRun], AnalysisRun]
EventSink = Callable[[Rollout, Event], None]


def make_run(store: Store, rollout: Rollout, action: CreateAnalysisRun) -> AnalysisRun:
    """The AnalysisRun a Rollout asks for: its templates merged, arguments substituted."""
    ns = rollout.metadata.namespace
    spec, _, _ = parse_rollout_spec(rollout.spec)
    labels = {**spec.selector, **action.analysis.labels, HASH_LABEL: action.pod_hash, "rollout-type": action.kind}
    run = AnalysisRun(
        metadata=ObjectMeta(
            name=action.name,
            namespace=ns,
            labels=labels,
            annotations={**action.analysis.annotations, ANNOTATION_REVISION: str(action.revision)},
            owner=f"Rollout/{rollout.name}",
        )
    )
    templates: list[tuple[str, dict[str, Any]]] = []
    try:
        for name in action.analysis.templates:
            template = store.find(AnalysisTemplate, name, ns)
            if template is None:
                raise RunSpecError(f'AnalysisTemplate "{name}" not found')
            templates.append((name, template.spec))
        metrics, args = build_run_spec(templates, action.args)
    except RunSpecError as exc:
        run.status = AnalysisRunStatus(phase=AnalysisPhase.ERROR, message=str(exc))
        return run
    dry_run = list(action.analysis.dry_run)
    for _, template_spec in templates:
        dry_run += [d.get("metricName", "") for d in template_spec.get("dryRun") or []]
    run.spec = {
        "metrics": metrics,
        "args": [{"name": k, "value": v} for k, v in args.items()],
        "dryRun": [{"metricName": d} for d in dry_run],
    }
    return run


class RolloutController:
    def __init__(self, store: Store, make_run: RunFactory, record: EventSink) -> None:
        self._store = store
        self._make_run = make_run
        self._record = record

    def observe(self, rollout: Rollout) -> Observed:
        ns = rollout.metadata.namespace
        owner = f"Rollout/{rollout.name}"
        replica_sets = tuple(r for r in self._store.list(ReplicaSet, ns) if r.metadata.owner == owner)
        owners = {f"ReplicaSet/{r.name}" for r in replica_sets}
        return Observed(
            replica_sets=replica_sets,
            pods=tuple(p for p in self._store.list(Pod, ns) if p.metadata.owner in owners),
            services={s.name: s for s in self._store.list(Service, ns)},
            analysis_runs={a.name: a for a in self._store.list(AnalysisRun, ns) if a.metadata.owner == owner},
            templates={t.name: t for t in self._store.list(AnalysisTemplate, ns)},
            deployments={d.name: d for d in self._store.list(Deployment, ns)},
        )

    def sync(self, now: float) -> list[float]:
        wakeups: list[float] = []
        for rollout in self._store.list(Rollout):
            plan = plan_rollout(rollout, self.observe(rollout), now)
            self.apply(rollout, plan)
            if plan.requeue_at is not None:
                wakeups.append(plan.requeue_at)
        self.cleanup_services()
        return wakeups

    def apply(self, rollout: Rollout, plan: Plan) -> None:
        ns = rollout.metadata.namespace
        for action in plan.actions:
            if isinstance(action, CreateReplicaSet):
                self._store.create(action.replica_set)
            elif isinstance(action, UpdateReplicaSet):
                rs = self._store.get(ReplicaSet, action.name, ns)
                for key, value in action.annotations.items():
                    if value is None:
                        rs.metadata.annotations.pop(key, None)
                    else:
                        rs.metadata.annotations[key] = value
                if action.replicas is not None:
                    rs.spec["replicas"] = action.replicas
                self._store.update(rs)
            elif isinstance(action, DeleteReplicaSet):
                self._store.delete(ReplicaSet, action.name, ns)
                for run in self._store.list(AnalysisRun, ns):
                    if run.metadata.labels.get(HASH_LABEL) == action.name.rsplit("-", 1)[-1]:
                        self._store.delete(AnalysisRun, run.name, ns)
            elif isinstance(action, DeletePod):
                if self._store.find(Pod, action.name, ns) is not None:
                    self._store.delete(Pod, action.name, ns)
            elif isinstance(action, SetServiceSelector):
                service = self._store.get(Service, action.service, ns)
                selector = dict(service.selector)
                if action.pod_hash is None:
                    selector.pop(HASH_LABEL, None)
                    service.metadata.annotations.pop(ANNOTATION_MANAGED_BY, None)
                else:
                    selector[HASH_LABEL] = action.pod_hash
                    service.metadata.annotations[ANNOTATION_MANAGED_BY] = action.rollout
                service.spec["selector"] = selector
                self._store.update(service)
            elif isinstance(action, CreateAnalysisRun):
                self._store.create(self._make_run(rollout, action))
            elif isinstance(action, DeleteAnalysisRun):
                self._store.delete(AnalysisRun, action.name, ns)
            elif isinstance(action, ScaleDeployment):
                deployment = self._store.get(Deployment, action.name, ns)
                deployment.spec["replicas"] = action.replicas
                self._store.update(deployment)
            elif isinstance(action, TerminateAnalysisRun):
                try:
                    run = self._store.get(AnalysisRun, action.name, ns)
                except NotFoundError:
                    continue
                run.spec["terminate"] = True
                self._store.update(run)
        for event in plan.events:
            self._record(rollout, event)
        current = self._store.get(Rollout, rollout.name, ns)
        if (
            current.status is None
            or current.status.to_json() != plan.status.to_json()
            or (
                (current.status.fast_track, current.status.abort_message)
                != (plan.status.fast_track, plan.status.abort_message)
            )
        ):
            current.status = plan.status
            self._store.update(current)

    def cleanup_services(self) -> None:
        referenced: set[tuple[str, str, str]] = set()
        for rollout in self._store.list(Rollout):
            spec, _, _ = parse_rollout_spec(rollout.spec)
            if spec.blue_green is not None:
                for name in (spec.blue_green.active_service, spec.blue_green.preview_service):
                    referenced.add((rollout.metadata.namespace, name, rollout.name))
        for service in self._store.list(Service):
            manager = service.metadata.annotations.get(ANNOTATION_MANAGED_BY)
            if manager is None or HASH_LABEL not in service.selector:
                continue
            if (service.metadata.namespace, service.name, manager) in referenced:
                continue
            service.spec["selector"] = {k: v for k, v in service.selector.items() if k != HASH_LABEL}
            service.metadata.annotations.pop(ANNOTATION_MANAGED_BY, None)
            self._store.update(service)
