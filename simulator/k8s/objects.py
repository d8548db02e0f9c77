"""The cluster's objects: metadata plus spec plus status, as Kubernetes and Argo shape them.

Specs keep the manifest's own JSON (`spec: dict`), so an applied manifest round-trips and `undo`
can copy a pod template verbatim; typed views (`simulator.rollouts.spec`) parse it where decisions
are made. Statuses the simulator writes are typed dataclasses with a `to_json` in Argo's field names.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from simulator.k8s.clock import format_time
from simulator.k8s.rollout_status import RolloutStatus

__all__ = [
    "ANNOTATION_DEADLINE",
    "ANNOTATION_DESIRED",
    "ANNOTATION_EPHEMERAL",
    "ANNOTATION_MANAGED_BY",
    "ANNOTATION_POOL",
    "ANNOTATION_PROXY_SERVES",
    "ANNOTATION_REVISION",
    "ANNOTATION_REVISION_HISTORY",
    "HASH_LABEL",
    "AnalysisPhase",
    "AnalysisRun",
    "AnalysisRunStatus",
    "AnalysisTemplate",
    "Deployment",
    "Ingress",
    "MetricResult",
    "ObjectMeta",
    "Pod",
    "PodStatus",
    "ReplicaSet",
    "ReplicaSetStatus",
    "Resource",
    "Rollout",
    "Service",
]

HASH_LABEL = "rollouts-pod-template-hash"
ANNOTATION_REVISION = "rollout.argoproj.io/revision"
ANNOTATION_REVISION_HISTORY = "rollout.argoproj.io/revision-history"
ANNOTATION_DESIRED = "rollout.argoproj.io/desired-replicas"
ANNOTATION_DEADLINE = "scale-down-deadline"
ANNOTATION_EPHEMERAL = "rollout.argoproj.io/ephemeral-metadata"
ANNOTATION_MANAGED_BY = "argo-rollouts.argoproj.io/managed-by-rollouts"
# Not Argo: the proxy pool that serves a ReplicaSet's pods (simulator.binding); shown by the dashboard.
ANNOTATION_POOL = "bluegreen.dev/pool"
# Not Argo: on a Service bound to a proxy listener, the pod-template hash of the ReplicaSet whose pool the
# proxy acknowledged serving on that listener ("" for a pool of no ReplicaSet). Written by simulator.binding
# from the proxy's answers; the Rollout controller reads it as Argo reads its target-group verification.
ANNOTATION_PROXY_SERVES = "bluegreen.dev/proxy-serves"


@dataclass
class ObjectMeta:
    name: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: int = 0
    generation: int = 1
    creation: float = 0.0
    # Creation order in the store; breaks ties between objects created in the same virtual instant.
    sequence: int = 0
    owner: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        out.update(
            uid=self.uid,
            resourceVersion=str(self.resource_version),
            generation=self.generation,
            creationTimestamp=format_time(self.creation),
        )
        if self.owner:
            kind, _, name = self.owner.partition("/")
            out["ownerReferences"] = [{"kind": kind, "name": name, "controller": True}]
        return out

    def created_before(self, other: ObjectMeta) -> bool:
        return (self.creation, self.sequence) < (other.creation, other.sequence)


@dataclass
class Resource:
    """Common shape; subclasses set `kind` and `api_version`."""

    metadata: ObjectMeta
    spec: dict[str, Any] = field(default_factory=dict)

    kind = ""
    api_version = "v1"

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.metadata.namespace, self.metadata.name)

    def status_json(self) -> dict[str, Any] | None:
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": self.metadata.to_json(),
            "spec": copy.deepcopy(self.spec),
        }
        status = self.status_json()
        if status is not None:
            out["status"] = status
        return out

    def clone(self) -> Self:
        return copy.deepcopy(self)


@dataclass
class PodStatus:
    phase: str = "Pending"  # Pending, Running, Failed
    reason: str = "ContainerCreating"  # what `kubectl get pods` shows: Running, CrashLoopBackOff, ...
    ready: bool = False
    ready_since: float | None = None
    started_at: float | None = None
    restarts: int = 0
    address: str = ""  # host:port of the pod's app once it listens

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "reason": self.reason,
            "ready": self.ready,
            "restartCount": self.restarts,
            "podIP": self.address.rpartition(":")[0] if self.address else "",
            "address": self.address,
        }


@dataclass
class Pod(Resource):
    """`spec` is the pod template's spec (containers, ...), copied from its ReplicaSet."""

    status: PodStatus = field(default_factory=PodStatus)
    kind = "Pod"

    def status_json(self) -> dict[str, Any]:
        return self.status.to_json()

    @property
    def container(self) -> dict[str, Any]:
        containers = self.spec.get("containers") or [{}]
        first: dict[str, Any] = containers[0]
        return first

    @property
    def image(self) -> str:
        return str(self.container.get("image", ""))

    @property
    def env(self) -> dict[str, str]:
        return {str(e.get("name")): str(e.get("value", "")) for e in self.container.get("env") or []}

    def available(self, now: float, min_ready_seconds: float) -> bool:
        return self.status.ready_since is not None and now - self.status.ready_since >= min_ready_seconds


@dataclass
class ReplicaSetStatus:
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "availableReplicas": self.available_replicas,
        }


@dataclass
class ReplicaSet(Resource):
    """spec: {replicas, selector: {matchLabels}, template: {metadata, spec}, minReadySeconds}."""

    status: ReplicaSetStatus = field(default_factory=ReplicaSetStatus)
    kind = "ReplicaSet"
    api_version = "apps/v1"

    def status_json(self) -> dict[str, Any]:
        return self.status.to_json()

    @property
    def replicas(self) -> int:
        return int(self.spec.get("replicas", 0))

    @property
    def pod_hash(self) -> str:
        return self.metadata.labels.get(HASH_LABEL, "")

    @property
    def revision(self) -> int:
        return int(self.metadata.annotations.get(ANNOTATION_REVISION, "0"))

    @property
    def min_ready_seconds(self) -> int:
        return int(self.spec.get("minReadySeconds", 0))


@dataclass
class Service(Resource):
    kind = "Service"

    @property
    def selector(self) -> dict[str, str]:
        selector: dict[str, str] = self.spec.get("selector") or {}
        return selector


@dataclass
class Deployment(Resource):
    """Only a source of a pod template for `workloadRef`; the simulator runs no Deployment controller."""

    kind = "Deployment"
    api_version = "apps/v1"


@dataclass
class Ingress(Resource):
    """Stored and listed, never simulated: the proxy's listeners play the Ingress role."""

    kind = "Ingress"
    api_version = "networking.k8s.io/v1"


@dataclass
class AnalysisTemplate(Resource):
    kind = "AnalysisTemplate"
    api_version = "argoproj.io/v1alpha1"


class AnalysisPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    ERROR = "Error"
    INCONCLUSIVE = "Inconclusive"

    @property
    def completed(self) -> bool:
        return self in (AnalysisPhase.SUCCESSFUL, AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE)


@dataclass
class Measurement:
    phase: AnalysisPhase
    started_at: float
    finished_at: float
    value: str = ""
    message: str = ""
    job: str = ""  # the job provider's Job, as Argo's `metadata.job-name`

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": str(self.phase),
            "startedAt": format_time(self.started_at),
            "finishedAt": format_time(self.finished_at),
        }
        if self.value:
            out["value"] = self.value
        if self.message:
            out["message"] = self.message
        if self.job:
            out["metadata"] = {"job-name": self.job}
        return out


@dataclass
class MetricResult:
    name: str
    phase: AnalysisPhase = AnalysisPhase.RUNNING
    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    dry_run: bool = False
    message: str = ""
    measurements: list[Measurement] = field(default_factory=list)
    next_at: float | None = None  # when the next measurement is due (controller bookkeeping)
    job: str = ""  # the simulated Job in flight, if any
    job_started_at: float = 0.0
    job_finish_at: float | None = None
    job_exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "phase": str(self.phase),
            "count": self.count,
            "successful": self.successful,
            "failed": self.failed,
            "inconclusive": self.inconclusive,
            "error": self.error,
            "consecutiveError": self.consecutive_error,
            "measurements": [m.to_json() for m in self.measurements],
        }
        if self.dry_run:
            out["dryRun"] = True
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class AnalysisRunStatus:
    phase: AnalysisPhase = AnalysisPhase.PENDING
    message: str = ""
    started_at: float | None = None
    metric_results: list[MetricResult] = field(default_factory=list)

    def metric(self, name: str) -> MetricResult | None:
        return next((m for m in self.metric_results if m.name == name), None)

    def to_json(self) -> dict[str, Any]:
        def summary(dry_run: bool) -> dict[str, int]:
            counts = {"count": 0, "successful": 0, "failed": 0, "inconclusive": 0, "error": 0}
            for m in self.metric_results:
                if m.dry_run == dry_run:
                    counts["count"] += 1
                    if str(m.phase).lower() in counts:
                        counts[str(m.phase).lower()] += 1
            return counts

        out: dict[str, Any] = {
            "phase": str(self.phase),
            "metricResults": [m.to_json() for m in self.metric_results],
            "runSummary": summary(dry_run=False),
        }
        if any(m.dry_run for m in self.metric_results):
            out["dryRunSummary"] = summary(dry_run=True)
        if self.message:
            out["message"] = self.message
        if self.started_at is not None:
            out["startedAt"] = format_time(self.started_at)
        return out


@dataclass
class AnalysisRun(Resource):
    """spec: {metrics: [...] (arguments already substituted), args: [...], dryRun, terminate}."""

    status: AnalysisRunStatus = field(default_factory=AnalysisRunStatus)
    kind = "AnalysisRun"
    api_version = "argoproj.io/v1alpha1"

    def status_json(self) -> dict[str, Any]:
        return self.status.to_json()


@dataclass
class Rollout(Resource):
    """`status` is None until the controller has seen the Rollout."""

    status: RolloutStatus | None = None
    kind = "Rollout"
    api_version = "argoproj.io/v1alpha1"

    def status_json(self) -> dict[str, Any] | None:
        return None if self.status is None else self.status.to_json()
