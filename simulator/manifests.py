"""Manifests in, objects out: multi-document YAML files and directories of them.

Every problem names its source (file and document number), the object (`Kind/name`) and the field.
Fields Argo knows but the simulator ignores come back as notices, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulator.analysis.spec import validate_template
from simulator.k8s.clock import parse_time
from simulator.k8s.fields import ManifestError
from simulator.k8s.objects import (
    AnalysisTemplate,
    Deployment,
    Ingress,
    ObjectMeta,
    Pod,
    PodStatus,
    ReplicaSet,
    ReplicaSetStatus,
    Resource,
    Rollout,
    Service,
)
from simulator.k8s.rollout_status import RolloutStatus
from simulator.rollouts.spec import parse_rollout_spec

__all__ = ["Loaded", "ManifestError", "load_path", "load_text", "parse_object"]

_KINDS: dict[str, tuple[type[Resource], set[str]]] = {
    "Rollout": (Rollout, {"argoproj.io/v1alpha1"}),
    "AnalysisTemplate": (AnalysisTemplate, {"argoproj.io/v1alpha1"}),
    "Service": (Service, {"v1"}),
    "Deployment": (Deployment, {"apps/v1"}),
    "Ingress": (Ingress, {"networking.k8s.io/v1", "extensions/v1beta1", "networking.k8s.io/v1beta1"}),
    # extensions/v1beta1 only so that Argo's captured fixtures (old clusters) still load.
    "ReplicaSet": (ReplicaSet, {"apps/v1", "extensions/v1beta1"}),
    "Pod": (Pod, {"v1"}),
}
_NOT_IMPLEMENTED_KINDS = {"ClusterAnalysisTemplate", "AnalysisRun", "Experiment", "ConfigMap", "Secret", "Job"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class Loaded:
    objects: list[Resource] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def _metadata(doc: dict[str, Any], where: str, problems: list[str]) -> ObjectMeta:
    raw = doc.get("metadata")
    if not isinstance(raw, dict):
        problems.append("metadata: is required")
        return ObjectMeta(name="")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: is required")
        name = ""
    elif len(name) > 253 or not _NAME.match(name):
        problems.append(
            f"metadata.name: invalid name {name!r}: must be lowercase letters, digits, '-' and '.' (RFC 1123)"
        )
    meta = ObjectMeta(name=name, namespace=str(raw.get("namespace") or "default"))
    for key in ("labels", "annotations"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            problems.append(f"metadata.{key}: expected a mapping")
            continue
        setattr(meta, key, {str(k): str(v) for k, v in value.items()})
    if isinstance(raw.get("creationTimestamp"), str):
        meta.creation = parse_time(raw["creationTimestamp"])
    for ref in raw.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            meta.owner = f"{ref.get('kind')}/{ref.get('name')}"
    return meta


def _captured_status(obj: Resource, status: dict[str, Any]) -> None:
    """Status carried by a fixture (objects captured from a cluster); live objects get it from controllers."""
    if isinstance(obj, Rollout):
        obj.status = RolloutStatus.from_json(status)
    elif isinstance(obj, ReplicaSet):
        obj.status = ReplicaSetStatus(
            int(status.get("replicas", 0)), int(status.get("readyReplicas", 0)), int(status.get("availableReplicas", 0))
        )
    elif isinstance(obj, Pod):
        containers = status.get("containerStatuses") or [{}]
        ready = all(bool(c.get("ready")) for c in containers)
        waiting = (containers[0].get("state") or {}).get("waiting") or {}
        phase = str(status.get("phase", "Pending"))
        obj.status = PodStatus(
            phase=phase,
            reason=str(waiting.get("reason") or phase),
            ready=ready,
            ready_since=obj.metadata.creation if ready else None,
            restarts=sum(int(c.get("restartCount", 0)) for c in containers),
        )


def parse_object(doc: object, where: str) -> tuple[Resource, list[str]]:
    """One document -> (object, notices); ManifestError names `where`, the object and each bad field."""
    if not isinstance(doc, dict):
        raise ManifestError(where, [f"expected a mapping (an object), got {type(doc).__name__}"])
    kind = doc.get("kind")
    label = f"{where}: {kind or '<no kind>'}/{(doc.get('metadata') or {}).get('name', '<no name>')}"
    if not isinstance(kind, str) or not kind:
        raise ManifestError(label, ["kind: is required"])
    if kind in _NOT_IMPLEMENTED_KINDS:
        raise ManifestError(label, [f"kind: {kind} is not implemented by the simulator"])
    if kind not in _KINDS:
        raise ManifestError(label, [f"kind: unknown kind {kind!r} (known: {', '.join(sorted(_KINDS))})"])
    cls, versions = _KINDS[kind]
    problems: list[str] = []
    notices: list[str] = []
    api_version = doc.get("apiVersion")
    if api_version not in versions:
        problems.append(f"apiVersion: {api_version!r} is not served for {kind} (use {' or '.join(sorted(versions))})")
    meta = _metadata(doc, where, problems)
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        problems.append("spec: expected a mapping")
        spec = {}
    if cls is Rollout:
        _, spec_problems, notices = parse_rollout_spec(spec)
        problems += spec_problems
    elif cls is AnalysisTemplate:
        spec_problems, notices = validate_template(spec)
        problems += spec_problems
    elif cls is Service:
        selector = spec.get("selector")
        if selector is not None and not isinstance(selector, dict):
            problems.append("spec.selector: expected a mapping of labels")
    if problems:
        raise ManifestError(label, problems)
    obj = cls(metadata=meta, spec=spec)
    if isinstance(doc.get("status"), dict):
        _captured_status(obj, doc["status"])
    return obj, [f"{kind}/{meta.name}: {n}" for n in notices]


def load_text(text: str, source: str = "<input>") -> Loaded:
    loaded = Loaded()
    errors: list[ManifestError] = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ManifestError(where, [f"invalid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    for index, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        try:
            obj, notices = parse_object(doc, f"{source}#{index}")
        except ManifestError as exc:
            errors.append(exc)
            continue
        loaded.objects.append(obj)
        loaded.notices += notices
    if errors:
        raise ManifestError("", [p for e in errors for p in str(e).splitlines()])
    return loaded


def _files(path: Path) -> Iterable[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    else:
        yield path


def load_path(path: str | Path) -> Loaded:
    """A file or a directory (recursively, in name order); kustomization files are skipped with a notice."""
    root = Path(path)
    if not root.exists():
        raise ManifestError(str(root), ["no such file or directory"])
    loaded = Loaded()
    for file in _files(root):
        if file.name in ("kustomization.yaml", "kustomization.yml"):
            loaded.notices.append(f"{file}: kustomization files are not applied (list the manifests instead)")
            continue
        part = load_text(file.read_text(encoding="utf-8"), str(file))
        loaded.objects += part.objects
        loaded.notices += part.notices
    return loaded
