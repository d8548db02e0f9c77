"""What a reconcile pass decides: actions for the controller to apply, events, the new status.

Plain values, so `simulator.rollouts.plan` stays a pure function and tests can compare plans directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.k8s.objects import AnalysisRun, AnalysisTemplate, Deployment, Pod, ReplicaSet, Service
from simulator.k8s.rollout_status import RolloutStatus
from simulator.rollouts.spec import EphemeralMetadata, RolloutAnalysis

__all__ = [
    "Action",
    "CreateAnalysisRun",
    "CreateReplicaSet",
    "DeleteAnalysisRun",
    "DeletePod",
    "DeleteReplicaSet",
    "Event",
    "Observed",
    "Plan",
    "ScaleDeployment",
    "SetServiceSelector",
    "TerminateAnalysisRun",
    "UpdateReplicaSet",
]


@dataclass(frozen=True)
class CreateReplicaSet:
    replica_set: ReplicaSet


@dataclass(frozen=True)
class UpdateReplicaSet:
    """Set replicas and/or annotations (None removes one) and ephemeral pod metadata of a ReplicaSet."""

    name: str
    replicas: int | None = None
    annotations: Mapping[str, str | None] = field(default_factory=dict)
    ephemeral: EphemeralMetadata | None = None


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str


@dataclass(frozen=True)
class DeletePod:
    """Evict a pod (restart): its ReplicaSet replaces it."""

    name: str


@dataclass(frozen=True)
class SetServiceSelector:
    """Point `service` at `pod_hash` (None removes the hash key); marks it managed by the Rollout."""

    service: str
    pod_hash: str | None
    rollout: str


@dataclass(frozen=True)
class CreateAnalysisRun:
    name: str
    kind: str  # PrePromotion | PostPromotion
    pod_hash: str
    revision: int
    analysis: RolloutAnalysis
    args: Mapping[str, str]


@dataclass(frozen=True)
class DeleteAnalysisRun:
    name: str


@dataclass(frozen=True)
class ScaleDeployment:
    """`workloadRef.scaleDown`: the Deployment a Rollout took over shrinks as the Rollout takes the load."""

    name: str
    replicas: int


@dataclass(frozen=True)
class TerminateAnalysisRun:
    name: str


Action = (
    CreateReplicaSet
    | UpdateReplicaSet
    | DeleteReplicaSet
    | DeletePod
    | SetServiceSelector
    | CreateAnalysisRun
    | TerminateAnalysisRun
    | DeleteAnalysisRun
    | ScaleDeployment
)


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Observed:
    replica_sets: tuple[ReplicaSet, ...] = ()  # the Rollout's own
    services: Mapping[str, Service] = field(default_factory=dict)
    analysis_runs: Mapping[str, AnalysisRun] = field(default_factory=dict)  # the Rollout's own
    templates: Mapping[str, AnalysisTemplate] = field(default_factory=dict)
    deployments: Mapping[str, Deployment] = field(default_factory=dict)
    pods: tuple[Pod, ...] = ()  # those of the Rollout's ReplicaSets (restarts)


@dataclass
class Plan:
    status: RolloutStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_at: float | None = None
