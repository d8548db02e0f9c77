"""The ReplicaSet controller: keeps `spec.replicas` pods per ReplicaSet and reports ready/available.

Pods are named `<replicaset>-<5 chars>` as Kubernetes names them; scale-down removes not-ready pods
first, then the newest. A pod counts as available once ready for the ReplicaSet's `minReadySeconds`.
Ephemeral metadata (`previewMetadata`/`activeMetadata`) is patched onto existing pods in place.
"""

from __future__ import annotations

import json
import random

from simulator.k8s.objects import ANNOTATION_EPHEMERAL, HASH_LABEL, ObjectMeta, Pod, ReplicaSet, ReplicaSetStatus
from simulator.k8s.store import Store

__all__ = ["ReplicaSetController"]

_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _ephemeral(annotations: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    raw = annotations.get(ANNOTATION_EPHEMERAL)
    if not raw:
        return {}, {}
    data = json.loads(raw)
    return dict(data.get("labels") or {}), dict(data.get("annotations") or {})


class ReplicaSetController:
    def __init__(self, store: Store, rng: random.Random) -> None:
        self._store = store
        self._rng = rng

    def _pod_name(self, rs: ReplicaSet, taken: set[str]) -> str:
        while True:
            name = f"{rs.name}-{''.join(self._rng.choice(_SUFFIX_ALPHABET) for _ in range(5))}"
            if name not in taken:
                return name

    def sync(self, now: float) -> list[float]:
        wakeups: list[float] = []
        pods = self._store.list(Pod)
        taken = {p.name for p in pods}
        for rs in self._store.list(ReplicaSet):
            owned = [p for p in pods if p.metadata.owner == f"ReplicaSet/{rs.name}"]
            owned = self._scale(rs, owned, taken)
            self._relabel(rs, owned)
            wakeups += self._status(rs, owned, now)
        return wakeups

    def _scale(self, rs: ReplicaSet, owned: list[Pod], taken: set[str]) -> list[Pod]:
        want = rs.replicas
        if len(owned) > want:
            # Not-ready pods go first, then the youngest (Kubernetes' ranking, simplified).
            ranked = sorted(owned, key=lambda p: (p.status.ready, -p.metadata.creation, -p.metadata.sequence))
            for pod in ranked[: len(owned) - want]:
                self._store.delete(Pod, pod.name, pod.metadata.namespace)
                owned.remove(pod)
        template = rs.spec.get("template") or {}
        base_labels = dict((template.get("metadata") or {}).get("labels") or {})
        base_annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        labels, annotations = _ephemeral(rs.metadata.annotations)
        while len(owned) < want:
            name = self._pod_name(rs, taken)
            taken.add(name)
            pod_annotations = {**base_annotations, **annotations}
            if ANNOTATION_EPHEMERAL in rs.metadata.annotations:
                pod_annotations[ANNOTATION_EPHEMERAL] = rs.metadata.annotations[ANNOTATION_EPHEMERAL]
            pod = Pod(
                metadata=ObjectMeta(
                    name=name,
                    namespace=rs.metadata.namespace,
                    labels={**base_labels, **labels, HASH_LABEL: rs.pod_hash},
                    annotations=pod_annotations,
                    owner=f"ReplicaSet/{rs.name}",
                ),
                spec=dict(template.get("spec") or {}),
            )
            owned.append(self._store.create(pod))
        return owned

    def _relabel(self, rs: ReplicaSet, owned: list[Pod]) -> None:
        wanted = rs.metadata.annotations.get(ANNOTATION_EPHEMERAL)
        new_labels, new_annotations = _ephemeral(rs.metadata.annotations)
        for pod in owned:
            if pod.metadata.annotations.get(ANNOTATION_EPHEMERAL) == wanted:
                continue
            old_labels, old_annotations = _ephemeral(pod.metadata.annotations)
            for key in old_labels:
                pod.metadata.labels.pop(key, None)
            for key in old_annotations:
                pod.metadata.annotations.pop(key, None)
            pod.metadata.labels.update(new_labels)
            pod.metadata.annotations.update(new_annotations)
            pod.metadata.annotations.pop(ANNOTATION_EPHEMERAL, None)
            if wanted:
                pod.metadata.annotations[ANNOTATION_EPHEMERAL] = wanted
            self._store.update(pod)

    def _status(self, rs: ReplicaSet, owned: list[Pod], now: float) -> list[float]:
        wakeups: list[float] = []
        min_ready = rs.min_ready_seconds
        available = 0
        for pod in owned:
            if pod.available(now, min_ready):
                available += 1
            elif pod.status.ready_since is not None:
                wakeups.append(pod.status.ready_since + min_ready)
        status = ReplicaSetStatus(len(owned), sum(1 for p in owned if p.status.ready), available)
        if status != rs.status:
            current = self._store.get(ReplicaSet, rs.name, rs.metadata.namespace)
            current.status = status
            self._store.update(current)
        return wakeups
