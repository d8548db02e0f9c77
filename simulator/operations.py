"""What users do to a running cluster: apply manifests and the `kubectl argo rollouts` verbs.

Each verb changes exactly what its Argo counterpart changes (spec §2.10-§2.13, §3.5): `promote`
clears pause conditions or `spec.paused`, `promote --full` sets `status.promoteFull`, `abort` and
`retry` flip `status.abort`, `set image` and `undo` change `spec.template`. The controller does the rest.
"""

from __future__ import annotations

import copy
from typing import Any

from simulator.k8s.clock import format_time
from simulator.k8s.fields import ManifestError
from simulator.k8s.objects import (
    ANNOTATION_MANAGED_BY,
    HASH_LABEL,
    AnalysisRun,
    AnalysisTemplate,
    Deployment,
    Pod,
    ReplicaSet,
    Resource,
    Rollout,
    Service,
)
from simulator.k8s.rollout_status import RolloutStatus
from simulator.k8s.store import NotFoundError, Store
from simulator.rollouts.spec import parse_rollout_spec
from simulator.rollouts.validation import validate_rollout

__all__ = [
    "OperationError",
    "abort",
    "apply",
    "delete",
    "lint",
    "merge_patch",
    "patch_spec",
    "promote",
    "restart",
    "retry",
    "set_image",
    "set_paused",
    "undo",
]


class OperationError(Exception):
    """A refused user operation; the message is one line for the CLI. `done`: what was done before it."""

    def __init__(self, message: str, done: list[str] | None = None) -> None:
        super().__init__(message)
        self.done = done or []


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what Argo's e2e `UpdateSpec`/`PatchSpec` send)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _kind_label(obj: Resource) -> str:
    group = obj.api_version.split("/")[0] if "/" in obj.api_version else ""
    return f"{obj.kind.lower()}.{group}" if group else obj.kind.lower()


def apply(store: Store, objects: list[Resource]) -> list[str]:
    """`kubectl apply`: create, or replace spec/labels/annotations keeping status; one line per object."""
    for obj in objects:
        if isinstance(obj, ReplicaSet | Pod):
            raise ManifestError(
                f"{obj.kind}/{obj.name}", [f"kind: {obj.kind} objects are managed by the controllers; apply a Rollout"]
            )
    lines: list[str] = []
    for obj in objects:
        label = f"{_kind_label(obj)}/{obj.name}"
        current = store.find(type(obj), obj.name, obj.metadata.namespace)
        if current is None:
            store.create(obj)
            lines.append(f"{label} created")
            continue
        spec = copy.deepcopy(obj.spec)
        annotations = dict(obj.metadata.annotations)
        if isinstance(obj, Service):
            # Like a three-way merge: what the Rollout controller added to the Service survives an apply.
            if HASH_LABEL in current.spec.get("selector", {}) and HASH_LABEL not in (spec.get("selector") or {}):
                spec.setdefault("selector", {})[HASH_LABEL] = current.spec["selector"][HASH_LABEL]
            if ANNOTATION_MANAGED_BY in current.metadata.annotations:
                annotations.setdefault(ANNOTATION_MANAGED_BY, current.metadata.annotations[ANNOTATION_MANAGED_BY])
        unchanged = (
            spec == current.spec
            and obj.metadata.labels == current.metadata.labels
            and annotations == current.metadata.annotations
        )
        if unchanged:
            lines.append(f"{label} unchanged")
            continue
        spec_changed = spec != current.spec
        current.spec = spec
        current.metadata.labels = dict(obj.metadata.labels)
        current.metadata.annotations = annotations
        store.update(current, spec_changed=spec_changed)
        lines.append(f"{label} configured")
    return lines


def _delete_owned(store: Store, owner: Resource) -> None:
    """Kubernetes' garbage collector, in the foreground: what `owner` owns goes with it (ReplicaSets, their
    pods, AnalysisRuns)."""
    ns = owner.metadata.namespace
    ref = f"{owner.kind}/{owner.name}"
    for cls in (ReplicaSet, Pod, AnalysisRun):
        for obj in store.list(cls, ns):
            if obj.metadata.owner == ref:
                _delete_owned(store, obj)
                store.delete(cls, obj.name, ns)


def delete(store: Store, objects: list[Resource]) -> list[str]:
    """`kubectl delete -f`: each object by kind, name and namespace, with what it owns; one line per object.
    Objects that do not exist are reported (OperationError) after the others are deleted, as kubectl does."""
    lines: list[str] = []
    missing: list[str] = []
    for obj in objects:
        group = _kind_label(obj).split(".", 1)
        plural = f"{group[0]}s" + (f".{group[1]}" if len(group) > 1 else "")
        current = store.find(type(obj), obj.name, obj.metadata.namespace)
        if current is None:
            missing.append(f'{plural} "{obj.name}" not found')
            continue
        _delete_owned(store, current)
        store.delete(type(obj), obj.name, obj.metadata.namespace)
        lines.append(f'{_kind_label(obj)} "{obj.name}" deleted')
    if missing:
        raise OperationError("; ".join(missing), lines)
    return lines


def lint(objects: list[Resource]) -> list[str]:
    """`lint -f`: the InvalidSpec checks of each Rollout against the objects beside it (schema errors were
    refused while loading). Like Argo's lint, only what the files hold is checked: a Service or template
    they do not contain is no error (it may be in the cluster)."""
    problems: list[str] = []
    for rollout in (o for o in objects if isinstance(o, Rollout)):

        def beside(cls: type[Resource], ns: str = rollout.metadata.namespace) -> dict[str, Any]:
            return {o.name: o for o in objects if isinstance(o, cls) and o.metadata.namespace == ns}

        spec, _, _ = parse_rollout_spec(rollout.spec)
        problem = validate_rollout(rollout, spec, beside(Service), beside(AnalysisTemplate), beside(Deployment))
        if problem and not problem.endswith("not found"):
            problems.append(f'The Rollout "{rollout.name}" is invalid: {problem}')
    return problems


def _rollout(store: Store, name: str, namespace: str) -> Rollout:
    try:
        return store.get(Rollout, name, namespace)
    except NotFoundError:
        raise OperationError(f'rollouts.argoproj.io "{name}" not found') from None


def _status(rollout: Rollout) -> RolloutStatus:
    if rollout.status is None:
        rollout.status = RolloutStatus()
    return rollout.status


def promote(store: Store, name: str, *, full: bool = False, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    status = _status(rollout)
    spec_changed = bool(rollout.spec.get("paused"))
    if spec_changed:
        rollout.spec["paused"] = False
    if full:
        if status.current_pod_hash != status.stable_rs:
            status.promote_full = True
    elif status.pause_conditions:
        status.pause_conditions = []  # controllerPause stays true: the controller sees that a human resumed
    store.update(rollout, spec_changed=spec_changed)
    return f"rollout '{name}' {'fully promoted' if full else 'promoted'}"


def abort(store: Store, name: str, *, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    _status(rollout).abort = True
    store.update(rollout)
    return f"rollout '{name}' aborted"


def retry(store: Store, name: str, *, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    _status(rollout).abort = False
    store.update(rollout)
    return f"rollout '{name}' retried"


def set_paused(store: Store, name: str, paused: bool = True, *, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    rollout.spec["paused"] = paused
    store.update(rollout, spec_changed=True)
    return f"rollout '{name}' {'paused' if paused else 'resumed'}"


def restart(store: Store, name: str, at: float, *, namespace: str = "default", delay: float = 0.0) -> str:
    """`restart [--in D]`: `spec.restartAt` (whole seconds, as the API stores times); the controller evicts
    the pods created before it."""
    rollout = _rollout(store, name, namespace)
    rollout.spec["restartAt"] = format_time(at + delay)
    store.update(rollout, spec_changed=True)
    return f"rollout '{name}' restarts in {delay:g}s"


def patch_spec(store: Store, name: str, patch: dict[str, Any], *, namespace: str = "default") -> Rollout:
    """A JSON merge patch of the whole Rollout (`{"spec": ...}`), validated like a manifest."""
    rollout = _rollout(store, name, namespace)
    spec = merge_patch(rollout.spec, patch.get("spec", {}))
    _, problems, _ = parse_rollout_spec(spec)
    if problems:
        raise OperationError(f"Rollout/{name}: {problems[0]}")
    changed = spec != rollout.spec
    rollout.spec = spec
    return store.update(rollout, spec_changed=changed)


def set_image(store: Store, name: str, container: str, image: str, *, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    containers = ((rollout.spec.get("template") or {}).get("spec") or {}).get("containers") or []
    matched = [c for c in containers if container == "*" or c.get("name") == container]
    if not matched:
        raise OperationError(f'unable to find container named "{container}"')
    for c in matched:
        c["image"] = image
    store.update(rollout, spec_changed=True)
    return f'rollout "{name}" image updated'


def undo(store: Store, name: str, *, to_revision: int | None = None, namespace: str = "default") -> str:
    rollout = _rollout(store, name, namespace)
    owned = [r for r in store.list(ReplicaSet, namespace) if r.metadata.owner == f"Rollout/{name}"]
    by_revision = sorted(owned, key=lambda r: r.revision, reverse=True)
    if to_revision is None:
        if len(by_revision) < 2:
            raise OperationError("no rollout history found")
        target = by_revision[1]
    else:
        found = [r for r in by_revision if r.revision == to_revision]
        if not found:
            raise OperationError(f"unable to find specified revision {to_revision} in history")
        target = found[0]
    template = copy.deepcopy(target.spec.get("template") or {})
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.pop(HASH_LABEL, None)
    template.setdefault("metadata", {})["labels"] = labels
    if template == rollout.spec.get("template"):
        return f"rollout '{name}' skipped rollback (current template already matches revision {target.revision})"
    rollout.spec["template"] = template
    store.update(rollout, spec_changed=True)
    return f"rollout '{name}' undo"
