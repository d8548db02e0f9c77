"""A Kubernetes API for `kubectl`, over the simulator's store, on a port of its own (the demo's 8092).

Enough of the API server that `kubectl` (and client libraries) work against the simulator as against a
cluster: legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/apps/v1`, `/apis/argoproj.io/v1alpha1`),
`/version`, an OpenAPI v3 index that tells kubectl to leave validation to the server (v2: 404); for
`core/v1` pods, services, events, namespaces, `apps/v1` replicasets and `argoproj.io/v1alpha1` rollouts,
analysisruns, analysistemplates:

| verb | how |
| --- | --- |
| get, list | JSON, or a `meta.k8s.io/v1` Table when kubectl asks for one (its columns: Argo's for Rollouts) |
| watch | `?watch=true`: one JSON event a line (`ADDED`, `MODIFIED`, `DELETED`), from `resourceVersion` |
| create | `POST` (Rollouts, Services, AnalysisTemplates; pods and ReplicaSets belong to the controllers: 405) |
| update | `PUT`; a stale `metadata.resourceVersion` is a 409 Conflict |
| patch | merge patch, JSON patch, and strategic merge patch for the core and apps kinds (lists merged by key) |
| delete | with what the object owns (foreground, as `kubectl delete` waits for) |
| status | `.../status`: get; patch/update of a Rollout's `abort`, `promoteFull`, `pauseConditions`, `controllerPause` |

A watch resumes after `resourceVersion` from the kept history (`ERROR` with 410 Expired when it is older)
and ends after `timeoutSeconds`.
`fieldSelector` (`metadata.name`, `metadata.namespace`, `involvedObject.*` for events) and `labelSelector`
(`a=b`, `a!=b`, `a`, `!a`) filter lists and watches. Errors are `Status` objects, worded as the API
server words them (`rollouts.argoproj.io "x" not found`), which kubectl prints as it would for a cluster.
Events are the cluster's events (what `describe` shows). With a token configured every call needs
`Authorization: Bearer <token>`. Nothing here imports the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from simulator import operations
from simulator.cluster import Cluster, ClusterEvent
from simulator.k8s.clock import format_time, parse_time
from simulator.k8s.fields import ManifestError
from simulator.k8s.objects import (
    AnalysisRun,
    AnalysisTemplate,
    Pod,
    ReplicaSet,
    Resource,
    Rollout,
    Service,
)
from simulator.k8s.rollout_status import PauseCondition
from simulator.k8s.store import AlreadyExistsError, ConflictError, NotFoundError, StoreError, WatchEvent
from simulator.manifests import parse_object

__all__ = ["KUBE", "KubeApi", "kubeconfig", "make_kube_app"]

HISTORY: Final = 5000  # watch events kept for a watch that resumes from a resourceVersion
MAX_WATCH: Final = 1800.0  # seconds a watch lasts at most without timeoutSeconds (as the API server's default)
VERSION: Final = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-bluegreen",
    "platform": "simulator",
}
VERBS: Final = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    short: tuple[str, ...] = ()
    cls: type[Resource] | None = None  # None: synthesized (events, namespaces)
    namespaced: bool = True
    creatable: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """What the API server names in its messages: `rollouts.argoproj.io`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: Final = (
    Kind("", "v1", "pods", "Pod", ("po",), Pod, creatable=False),
    Kind("", "v1", "services", "Service", ("svc",), Service),
    Kind("", "v1", "events", "Event", ("ev",), creatable=False),
    Kind("", "v1", "namespaces", "Namespace", ("ns",), namespaced=False, creatable=False),
    Kind("apps", "v1", "replicasets", "ReplicaSet", ("rs",), ReplicaSet, creatable=False),
    Kind("argoproj.io", "v1alpha1", "rollouts", "Rollout", ("ro",), Rollout),
    Kind("argoproj.io", "v1alpha1", "analysisruns", "AnalysisRun", ("ar",), AnalysisRun, creatable=False),
    Kind("argoproj.io", "v1alpha1", "analysistemplates", "AnalysisTemplate", ("at",), AnalysisTemplate),
)
GROUPS: Final = {"apps": "v1", "argoproj.io": "v1alpha1"}
_BY_PATH: Final = {(k.group, k.version, k.plural): k for k in KINDS}
# Strategic merge patch: the merge key of the lists kubectl patches by key (Kubernetes' patchMergeKey).
_MERGE_KEYS: Final = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "port",
    "imagePullSecrets": "name",
    "conditions": "type",
}
_STATUS_WRITABLE: Final = ("abort", "promoteFull", "pauseConditions", "controllerPause")
_CONFLICT: Final = (
    'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
    "please apply your changes to the latest version and try again"
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.code)

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found', {"name": name, "kind": kind.plural})


def _age(seconds: float) -> str:
    """kubectl's duration.HumanDuration, as the AGE column shows it."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h{m % 60}m" if h < 8 and m % 60 else f"{h}h"
    return f"{h // 24}d"


# --- selectors ------------------------------------------------------------------------------------


def _label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based selectors: (key, value or None for existence, wanted: True to match, False to exclude)."""
    tests: list[tuple[str, str | None, bool]] = []
    for raw in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in raw:
            k, v = (x.strip() for x in raw.split("!=", 1))
            tests.append((k, v, False))
        elif "=" in raw:
            k, v = (x.strip() for x in raw.split("==" if "==" in raw else "=", 1))
            tests.append((k, v, True))
        elif raw.startswith("!"):
            tests.append((raw[1:].strip(), None, False))
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", raw):
            tests.append((raw, None, True))
        else:
            raise ApiError(
                400, "BadRequest", f"unable to parse requirement: {raw!r} (set-based selectors are not supported)"
            )

    def matches(labels: dict[str, str]) -> bool:
        for key, value, wanted in tests:
            found = key in labels if value is None else labels.get(key) == value
            if found != wanted:
                return False
        return True

    return matches


def _field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    tests: list[tuple[list[str], str, bool]] = []
    for raw in filter(None, (p.strip() for p in selector.split(","))):
        negate = "!=" in raw
        k, _, v = raw.partition("!=" if negate else ("==" if "==" in raw else "="))
        tests.append((k.strip().split("."), v.strip(), negate))

    def value(doc: dict[str, Any], path: list[str]) -> str:
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return "" if node is None else str(node)

    return lambda doc: all((value(doc, p) == v) != negate for p, v, negate in tests)


# --- patches --------------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON patch: path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "JSON patch: expected a list of operations")
    doc = copy.deepcopy(doc)

    def parent(path: list[str]) -> tuple[Any, str]:
        if not path:
            raise ApiError(422, "Invalid", "JSON patch: the whole document cannot be the target")
        node = doc
        for part in path[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, path[-1]

    def get(path: list[str]) -> Any:
        node = doc
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def remove(path: list[str]) -> Any:
        node, last = parent(path)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    def add(path: list[str], value: Any) -> None:
        node, last = parent(path)
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        else:
            node[last] = value

    for i, op in enumerate(ops):
        try:
            name, path = op["op"], _pointer(op["path"])
            if name == "add":
                add(path, copy.deepcopy(op["value"]))
            elif name == "remove":
                remove(path)
            elif name == "replace":
                get(path)  # must exist
                node, last = parent(path)
                if isinstance(node, list):
                    node[int(last)] = copy.deepcopy(op["value"])
                else:
                    node[last] = copy.deepcopy(op["value"])
            elif name in ("move", "copy"):
                source = _pointer(op["from"])
                value = remove(source) if name == "move" else copy.deepcopy(get(source))
                add(path, value)
            elif name == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"JSON patch: test operation {i} failed at {op['path']}")
            else:
                raise ApiError(422, "Invalid", f"JSON patch: unknown operation {name!r}")
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
            raise ApiError(422, "Invalid", f"JSON patch: operation {i} cannot be applied: {exc}") from None
    return doc


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes' strategic merge patch for the fields kubectl sends: maps merge, lists of objects with a
    merge key merge by key (`$patch: delete` removes one), other lists are replaced; `$patch: replace`,
    `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...` are honoured."""
    if isinstance(patch, list):
        merge_key = _MERGE_KEYS.get(key)
        if merge_key is None or not isinstance(target, list) or not all(isinstance(p, dict) for p in patch):
            return [p for p in copy.deepcopy(patch) if not (isinstance(p, dict) and p.get("$patch") == "delete")]
        items: list[Any] = copy.deepcopy(target)
        for item in patch:
            wanted = item.get(merge_key)
            index = next((i for i, r in enumerate(items) if isinstance(r, dict) and r.get(merge_key) == wanted), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    items.pop(index)
            elif index is None:
                items.append(strategic_merge_patch({}, item))
            else:
                items[index] = strategic_merge_patch(items[index], item)
        return items
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, value in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        merged = None if value is None else strategic_merge_patch(result.get(k), value, k)
        if merged is None:
            result.pop(k, None)
        else:
            result[k] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


# --- the API --------------------------------------------------------------------------------------


class KubeApi:
    def __init__(self, cluster: Cluster, token: str | None = None) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.token = token
        self._history: deque[WatchEvent] = deque(maxlen=HISTORY)
        self._watchers: set[asyncio.Queue[tuple[str, Any] | None]] = set()
        self._unsubscribe = [self.store.subscribe(self._on_change), cluster.on_event(self._on_event)]
        self._start_version = self.store.resource_version
        self._started = cluster.clock.now()  # namespaces are as old as the cluster

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for queue in list(self._watchers):
            queue.put_nowait(None)

    def _on_change(self, event: WatchEvent) -> None:
        self._history.append(event)
        for queue in self._watchers:
            queue.put_nowait(("store", event))

    def _on_event(self, event: ClusterEvent) -> None:
        for queue in self._watchers:
            queue.put_nowait(("event", event))

    # --- objects as JSON ---------------------------------------------------------------------

    def _doc(self, obj: Resource, resource_version: int | None = None) -> dict[str, Any]:
        doc = obj.to_json()
        meta = doc["metadata"]
        if resource_version is not None:
            meta["resourceVersion"] = str(resource_version)
        if meta.get("ownerReferences"):
            for ref in meta["ownerReferences"]:
                owner_kind = next((k for k in KINDS if k.kind == ref["kind"]), None)
                ref["apiVersion"] = owner_kind.group_version if owner_kind else "v1"
                owner = self._find_any(ref["kind"], ref["name"], obj.metadata.namespace)
                ref["uid"] = owner.metadata.uid if owner is not None else ""
                ref["blockOwnerDeletion"] = True
        if isinstance(obj, Service):
            spec = doc["spec"]
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("clusterIP", self._cluster_ip(obj))
        return doc

    def _cluster_ip(self, service: Service) -> str:
        n = int(re.sub(r"\D", "", service.metadata.uid) or "0")
        return f"10.96.{(n // 250) % 250}.{n % 250 + 1}"

    def _find_any(self, kind: str, name: str, namespace: str) -> Resource | None:
        spec = next((k for k in KINDS if k.kind == kind and k.cls is not None), None)
        return self.store.find(spec.cls, name, namespace) if spec is not None and spec.cls is not None else None

    def _namespaces(self) -> list[dict[str, Any]]:
        names = {"default"} | {o.metadata.namespace for k in KINDS if k.cls for o in self.store.list(k.cls)}
        return [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": n,
                    "uid": f"namespace-{n}",
                    "resourceVersion": "1",
                    "creationTimestamp": format_time(self._started),
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for n in sorted(names)
        ]

    def _event_doc(self, event: ClusterEvent) -> dict[str, Any]:
        involved = self._locate(event.kind, event.name)
        namespace = involved.metadata.namespace if involved is not None else "default"
        stamp = format_time(event.time)
        kind = next((k for k in KINDS if k.kind == event.kind), None)
        ident = zlib.crc32(f"{event.time}|{event.kind}|{event.name}|{event.reason}|{event.message}".encode())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{event.name}.{int(event.time * 1000):x}{ident:08x}",
                "namespace": namespace,
                "uid": f"event-{ident:08x}",
                "resourceVersion": str(self.store.resource_version),
                "creationTimestamp": stamp,
            },
            "involvedObject": {
                "kind": event.kind,
                "name": event.name,
                "namespace": namespace,
                "uid": involved.metadata.uid if involved is not None else "",
                "apiVersion": kind.group_version if kind else "v1",
            },
            "reason": event.reason,
            "message": event.message,
            "type": event.type,
            "count": 1,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "rollouts-controller"},
            "reportingComponent": "rollouts-controller",
        }

    def _locate(self, kind: str, name: str) -> Resource | None:
        spec = next((k for k in KINDS if k.kind == kind and k.cls is not None), None)
        if spec is None or spec.cls is None:
            return None
        return next((o for o in self.store.list(spec.cls) if o.name == name), None)

    def _docs(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        if kind.kind == "Namespace":
            return self._namespaces()
        if kind.kind == "Event":
            docs = [self._event_doc(e) for e in self.cluster.events]
            return [d for d in docs if namespace is None or d["metadata"]["namespace"] == namespace]
        assert kind.cls is not None
        return [self._doc(o) for o in self.store.list(kind.cls, namespace)]

    # --- tables --------------------------------------------------------------------------------

    def _columns(self, kind: Kind) -> list[tuple[str, str]]:
        table = {
            "Rollout": [
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
            ],
            "ReplicaSet": [("Desired", "integer"), ("Current", "integer"), ("Ready", "integer")],
            "Pod": [("Ready", "string"), ("Status", "string"), ("Restarts", "integer")],
            "Service": [("Type", "string"), ("Cluster-IP", "string"), ("External-IP", "string"), ("Port(s)", "string")],
            "AnalysisRun": [("Status", "string")],
            "Namespace": [("Status", "string")],
            "Event": [("Type", "string"), ("Reason", "string"), ("Object", "string"), ("Message", "string")],
        }
        return [("Name", "string"), *table.get(kind.kind, []), ("Age", "string")]

    def _cells(self, kind: Kind, doc: dict[str, Any]) -> list[Any]:
        now = self.cluster.clock.now()
        meta, spec, status = doc["metadata"], doc.get("spec") or {}, doc.get("status") or {}
        created = meta.get("creationTimestamp")
        age = _age(now - parse_time(created)) if created else "<unknown>"
        name = meta["name"]
        if kind.kind == "Rollout":
            cells = [
                spec.get("replicas", 1),
                status.get("replicas", 0),
                status.get("updatedReplicas", 0),
                status.get("availableReplicas", 0),
            ]
        elif kind.kind == "ReplicaSet":
            cells = [spec.get("replicas", 0), status.get("replicas", 0), status.get("readyReplicas", 0)]
        elif kind.kind == "Pod":
            cells = [
                f"{1 if status.get('ready') else 0}/1",
                status.get("reason") or status.get("phase", ""),
                status.get("restartCount", 0),
            ]
        elif kind.kind == "Service":
            ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
            cells = [spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), "<none>", ports]
        elif kind.kind == "AnalysisRun":
            cells = [status.get("phase", "")]
        elif kind.kind == "Namespace":
            cells = [status.get("phase", "Active")]
        elif kind.kind == "Event":
            involved = doc["involvedObject"]
            age = _age(now - parse_time(doc["lastTimestamp"]))
            obj = f"{involved['kind'].lower()}/{involved['name']}"
            return [age, doc["type"], doc["reason"], obj, doc["message"]]
        else:
            cells = []
        return [name, *cells, age]

    def _table(self, kind: Kind, docs: Iterable[dict[str, Any]], include: str, resource_version: int) -> dict[str, Any]:
        columns = self._columns(kind)
        if kind.kind == "Event":
            columns = [("Last Seen", "string"), *columns[1:-1]]
        definitions = [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": "", "priority": 0}
            for n, t in columns
        ]
        rows = []
        for doc in docs:
            if include == "None":
                obj = None
            elif include == "Object":
                obj = doc
            else:
                obj = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": doc["metadata"]}
            rows.append({"cells": self._cells(kind, doc), "object": obj})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(resource_version)},
            "columnDefinitions": definitions,
            "rows": rows,
        }

    # --- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return ApiError(401, "Unauthorized", "Unauthorized").response()
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ApiError as exc:
            return exc.response()
        except web.HTTPNotFound:
            return ApiError(404, "NotFound", "the server could not find the requested resource").response()
        except web.HTTPMethodNotAllowed:
            return ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            ).response()

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def api_versions(self, request: web.Request) -> web.Response:
        address = f"{request.host}"
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }
        )

    async def api_groups(self, request: web.Request) -> web.Response:
        groups = [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
            }
            for g, v in GROUPS.items()
        ]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def api_group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        if group not in GROUPS:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        v = GROUPS[group]
        gv = {"groupVersion": f"{group}/{v}", "version": v}
        return web.json_response(
            {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv}
        )

    async def resources(self, request: web.Request) -> web.Response:
        group = request.match_info.get("group", "")
        version = request.match_info["version"]
        kinds = [k for k in KINDS if (k.group, k.version) == (group, version)]
        if not kinds:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for k in kinds:
            verbs = VERBS if k.cls is not None else ["get", "list", "watch"]
            resources.append(
                {
                    "name": k.plural,
                    "singularName": k.kind.lower(),
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": verbs,
                    "shortNames": list(k.short),
                    **({"categories": ["all"]} if k.kind in ("Pod", "Service", "ReplicaSet", "Rollout") else {}),
                }
            )
            if k.cls is not None:
                resources.append(
                    {
                        "name": f"{k.plural}/status",
                        "singularName": "",
                        "namespaced": True,
                        "kind": k.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return web.json_response(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": kinds[0].group_version,
                "resources": resources,
            }
        )

    async def openapi_v2(self, request: web.Request) -> web.Response:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    async def openapi_v3(self, request: web.Request) -> web.Response:
        """The OpenAPI v3 index: one document per group version (see `openapi_group`)."""
        paths = {}
        for gv in sorted({k.group_version for k in KINDS}):
            prefix = "api" if "/" not in gv else "apis"
            paths[f"{prefix}/{gv}"] = {"serverRelativeURL": f"/openapi/v3/{prefix}/{gv}?hash={VERSION['gitVersion']}"}
        return web.json_response({"paths": paths})

    async def openapi_group(self, request: web.Request) -> web.Response:
        """Just what kubectl reads before `apply`/`create`: each kind's PATCH takes `fieldValidation`, so kubectl
        leaves validation to the server (this one validates every object as the manifests loader does)."""
        gv = request.match_info["gv"].split("/", 1)[1]
        kinds = [k for k in KINDS if k.group_version == gv]
        if not kinds:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        paths: dict[str, Any] = {}
        for k in kinds:
            base = f"/api/{gv}" if not k.group else f"/apis/{gv}"
            path = (
                f"{base}/namespaces/{{namespace}}/{k.plural}/{{name}}"
                if k.namespaced
                else f"{base}/{k.plural}/{{name}}"
            )
            paths[path] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        doc = {"openapi": "3.0.0", "info": {"title": "bluegreen simulator", "version": VERSION["gitVersion"]}}
        return web.json_response({**doc, "paths": paths, "components": {"schemas": {}}})

    def _kind(self, request: web.Request) -> Kind:
        info = request.match_info
        kind = _BY_PATH.get((info.get("group", ""), info["version"], info["plural"]))
        if kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return kind

    async def collection(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        namespace = request.match_info.get("namespace")
        if request.method == "POST":
            return await self._create(request, kind, namespace or "default")
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on {kind.qualified}")
        query = request.query
        labels = _label_matcher(query.get("labelSelector", ""))
        fields = _field_matcher(query.get("fieldSelector", ""))

        def selected(doc: dict[str, Any]) -> bool:
            return labels(doc["metadata"].get("labels") or {}) and fields(doc)

        if query.get("watch") in ("true", "1"):
            return await self._watch(request, kind, namespace, selected)
        version = self.store.resource_version
        docs = [d for d in self._docs(kind, namespace) if selected(d)]
        if _wants_table(request):
            return web.json_response(self._table(kind, docs, query.get("includeObject", "Metadata"), version))
        return web.json_response(
            {
                "kind": f"{kind.kind}List",
                "apiVersion": kind.group_version,
                "metadata": {"resourceVersion": str(version)},
                "items": docs,
            }
        )

    async def item(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        namespace = request.match_info.get("namespace", "default")
        name = request.match_info["name"]
        status = request.match_info.get("sub") == "status"
        if request.method == "GET":
            doc = self._get_doc(kind, name, namespace)
            if _wants_table(request):
                return web.json_response(
                    self._table(
                        kind, [doc], request.query.get("includeObject", "Metadata"), self.store.resource_version
                    )
                )
            return web.json_response(doc)
        if kind.cls is None:
            raise ApiError(405, "MethodNotAllowed", f"{kind.qualified} are read-only here")
        current = self.store.find(kind.cls, name, namespace)
        if current is None:
            raise _not_found(kind, name)
        if request.method == "DELETE":
            return self._delete(kind, current)
        body = await _json_body(request)
        before = self._doc(current)
        if request.method == "PATCH":
            content_type = request.content_type
            if content_type == "application/merge-patch+json":
                after = operations.merge_patch(before, body)
            elif content_type == "application/json-patch+json":
                after = json_patch(before, body)
            elif content_type == "application/strategic-merge-patch+json":
                if kind.group == "argoproj.io":
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        f"the body of the request was in an unknown format - accepted media types include: "
                        f"application/json-patch+json, application/merge-patch+json (strategic merge patch is for "
                        f"built-in kinds, not {kind.qualified})",
                    )
                after = strategic_merge_patch(before, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
        elif request.method == "PUT":
            after = body
        else:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed")
        if not isinstance(after, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        # Optimistic concurrency: a resourceVersion in the body (PUT, or set by the patch) must be the current one.
        wanted_version = str((after.get("metadata") or {}).get("resourceVersion") or "")
        if wanted_version and wanted_version != str(current.metadata.resource_version):
            raise ApiError(
                409,
                "Conflict",
                _CONFLICT.format(kind=kind.qualified, name=name),
                {"name": name, "kind": kind.plural},
            )
        updated = self._write_status(kind, current, after) if status else self._write(kind, current, after)
        return web.json_response(self._doc(updated))

    def _get_doc(self, kind: Kind, name: str, namespace: str) -> dict[str, Any]:
        if kind.kind == "Namespace":
            found = next((d for d in self._namespaces() if d["metadata"]["name"] == name), None)
        elif kind.kind == "Event":
            found = next((d for d in self._docs(kind, namespace) if d["metadata"]["name"] == name), None)
        else:
            assert kind.cls is not None
            obj = self.store.find(kind.cls, name, namespace)
            found = self._doc(obj) if obj is not None else None
        if found is None:
            raise _not_found(kind, name)
        return found

    def _parse(self, kind: Kind, doc: Any, namespace: str) -> Resource:
        if not isinstance(doc, dict):
            raise ApiError(400, "BadRequest", "the body is not a JSON object")
        doc = dict(doc)
        doc.setdefault("kind", kind.kind)
        doc.setdefault("apiVersion", kind.group_version)
        meta = dict(doc.get("metadata") or {})
        if meta.get("namespace") not in (None, namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        meta["namespace"] = namespace
        doc["metadata"] = meta
        if doc["kind"] != kind.kind:
            raise ApiError(400, "BadRequest", f"kind {doc['kind']!r} cannot be sent to {kind.qualified}")
        try:
            obj, _ = parse_object(doc, "request")
        except ManifestError as exc:
            raise ApiError(422, "Invalid", f'{kind.kind} "{meta.get("name", "")}" is invalid: {exc}') from None
        return obj

    async def _create(self, request: web.Request, kind: Kind, namespace: str) -> web.Response:
        if not kind.creatable or kind.cls is None:
            raise ApiError(
                405, "MethodNotAllowed", f"{kind.qualified} are created by the simulator's controllers, not by a client"
            )
        obj = self._parse(kind, await _json_body(request), namespace)
        if request.query.get("dryRun") == "All":
            return web.json_response(self._doc(obj), status=201)
        try:
            created = self.store.create(obj)
        except AlreadyExistsError:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{obj.name}" already exists',
                {"name": obj.name, "kind": kind.plural},
            ) from None
        return web.json_response(self._doc(created), status=201)

    def _write(self, kind: Kind, current: Resource, doc: dict[str, Any]) -> Resource:
        wanted = self._parse(kind, doc, current.metadata.namespace)
        if wanted.name != current.name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        spec_changed = wanted.spec != current.spec
        current.spec = wanted.spec
        current.metadata.labels = dict(wanted.metadata.labels)
        current.metadata.annotations = dict(wanted.metadata.annotations)
        return self._update(kind, current, spec_changed)

    def _write_status(self, kind: Kind, current: Resource, doc: dict[str, Any]) -> Resource:
        if not isinstance(current, Rollout) or current.status is None:
            raise ApiError(
                405, "MethodNotAllowed", f"the status of {kind.qualified} is written by the controllers only"
            )
        before = current.status.to_json()
        after = doc.get("status") or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        refused = sorted(changed - set(_STATUS_WRITABLE))
        if refused:
            raise ApiError(
                422,
                "Invalid",
                f'Rollout "{current.name}" is invalid: status.{refused[0]}: not writable here (writable: '
                f"{', '.join(_STATUS_WRITABLE)})",
            )
        st = current.status
        if "abort" in changed:
            st.abort = bool(after.get("abort"))
        if "promoteFull" in changed:
            st.promote_full = bool(after.get("promoteFull"))
        if "controllerPause" in changed:
            st.controller_pause = bool(after.get("controllerPause"))
        if "pauseConditions" in changed:
            try:
                st.pause_conditions = [
                    PauseCondition(str(p["reason"]), parse_time(p["startTime"]))
                    for p in after.get("pauseConditions") or []
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise ApiError(422, "Invalid", f"status.pauseConditions: {exc}") from None
        return self._update(kind, current, False)

    def _update(self, kind: Kind, obj: Resource, spec_changed: bool) -> Resource:
        try:
            return self.store.update(obj, spec_changed=spec_changed)
        except ConflictError:
            raise ApiError(
                409,
                "Conflict",
                _CONFLICT.format(kind=kind.qualified, name=obj.name),
                {"name": obj.name, "kind": kind.plural},
            ) from None
        except NotFoundError:
            raise _not_found(kind, obj.name) from None

    def _delete(self, kind: Kind, current: Resource) -> web.Response:
        try:
            operations.delete(self.store, [current])
        except (operations.OperationError, StoreError):
            raise _not_found(kind, current.name) from None
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": current.name, "kind": kind.plural, "uid": current.metadata.uid},
            }
        )

    async def _watch(
        self, request: web.Request, kind: Kind, namespace: str | None, selected: Callable[[dict[str, Any]], bool]
    ) -> web.StreamResponse:
        query = request.query
        table = _wants_table(request)
        include = query.get("includeObject", "Metadata")
        try:
            timeout = min(float(query.get("timeoutSeconds", MAX_WATCH)), MAX_WATCH)
            since = int(query.get("resourceVersion") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "timeoutSeconds and resourceVersion must be numbers") from None
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self._watchers.add(queue)
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        seen: dict[tuple[str, str], bool] = {}  # objects the client knows, so a filtered-out change is a DELETED

        async def send(type_: str, doc: dict[str, Any]) -> None:
            obj = self._table(kind, [doc], include, int(doc["metadata"].get("resourceVersion") or 0)) if table else doc
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        async def store_event(event: WatchEvent) -> None:
            if kind.cls is None or event.object.kind != kind.kind:
                return
            if namespace is not None and event.object.metadata.namespace != namespace:
                return
            doc = self._doc(event.object, event.resource_version)
            key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
            if event.type.value == "DELETED":
                if seen.pop(key, False) or selected(doc):
                    await send("DELETED", doc)
            elif selected(doc):
                await send("MODIFIED" if seen.get(key) else "ADDED", doc)
                seen[key] = True
            elif seen.pop(key, False):
                await send("DELETED", doc)

        try:
            if since == 0:
                for doc in self._docs(kind, namespace):
                    if selected(doc):
                        seen[(doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = True
                        await send("ADDED", doc)
            else:
                for doc in self._docs(kind, namespace):
                    if selected(doc):
                        seen[(doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = True
                full = len(self._history) == self._history.maxlen
                covered = self._history[0].resource_version - 1 if full else self._start_version
                if since < covered:
                    gone = ApiError(410, "Expired", f"too old resource version: {since} ({covered})")
                    await response.write(json.dumps({"type": "ERROR", "object": gone.body()}).encode() + b"\n")
                    return response
                for event in [e for e in self._history if e.resource_version > since]:
                    await store_event(event)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if item is None:
                    break
                source, payload = item
                if source == "store":
                    await store_event(payload)
                elif kind.kind == "Event":
                    doc = self._event_doc(payload)
                    if (namespace is None or doc["metadata"]["namespace"] == namespace) and selected(doc):
                        await send("ADDED", doc)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "BadRequest", "the request body is not valid JSON") from None


KUBE = web.AppKey("simulator.kube", KubeApi)


def make_kube_app(cluster: Cluster, token: str | None = None) -> web.Application:
    """The Kubernetes API app; serve it on its own port (its `/api/v1` is the core group's)."""
    api = KubeApi(cluster, token)
    app = web.Application(middlewares=[api.middleware])
    app[KUBE] = api

    async def on_shutdown(_: web.Application) -> None:
        api.close()

    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/version", api.version)
    r.add_get("/api", api.api_versions)
    r.add_get("/apis", api.api_groups)
    r.add_get("/apis/{group}", api.api_group)
    r.add_get("/openapi/v2", api.openapi_v2)
    r.add_get("/openapi/v3", api.openapi_v3)
    r.add_get("/openapi/v3/{gv:(api|apis)/.+}", api.openapi_group)
    r.add_get("/api/{version}", api.resources)
    r.add_get("/apis/{group}/{version}", api.resources)
    for prefix in ("/api/{version}", "/apis/{group}/{version}"):
        r.add_route("*", prefix + "/{plural}", api.collection)
        r.add_route("*", prefix + "/namespaces/{namespace}/{plural}", api.collection)
        r.add_route("*", prefix + "/namespaces/{namespace}/{plural}/{name}", api.item)
        r.add_route("*", prefix + "/namespaces/{namespace}/{plural}/{name}/{sub}", api.item)
    # Cluster-scoped objects (namespaces): /api/v1/namespaces/{name}
    r.add_route("*", "/api/{version}/{plural}/{name}", api.item)
    return app


def kubeconfig(server: str, token: str | None = None, name: str = "bluegreen-demo") -> str:
    """A kubeconfig whose current context is the simulator (YAML is a superset of this JSON)."""
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return json.dumps(config, indent=2) + "\n"
