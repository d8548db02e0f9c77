"""The simulator's HTTP API, added to the proxy's admin app in the demo (JSON, prefix `/api/v1`).

| call | does |
| --- | --- |
| `POST /api/v1/manifests` (YAML body) | `kubectl apply`; `{"results": [...], "notices": [...]}` |
| `DELETE /api/v1/manifests` (YAML body) | `kubectl delete -f`; `{"results": [...]}` (404 naming what was missing) |
| `GET /api/v1/rollouts[?namespace=NS]` | name, namespace, phase, message and replica counts of each Rollout |
| `GET /api/v1/rollouts/{name}` | the Rollout, its ReplicaSets, Pods and AnalysisRuns, and the `get` tree |
| `POST /api/v1/rollouts/{name}/promote` `{"full": bool}` | `promote [--full]` |
| `POST /api/v1/rollouts/{name}/abort`, `/retry`, `/pause` | `abort`, `retry`, `pause` |
| `POST /api/v1/rollouts/{name}/restart` `{"in": seconds}` | `restart [--in D]` |
| `POST /api/v1/rollouts/{name}/undo` `{"toRevision": N}` | `undo [--to-revision N]` |
| `POST /api/v1/rollouts/{name}/image` `{"container": "*", "image": "..."}` | `set image` |
| `POST /api/v1/pods/{name}/crash` | kill a pod's container (fault injection) |
| `GET /api/v1/events` | server-sent events: every object change and every cluster event |

Every `/rollouts/{name}` call takes `?namespace=NS` (default `default`). Errors are `{"error": "..."}`
with 400 (bad input) or 404 (no such object); a bad request never reaches the running cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from simulator import operations
from simulator.cluster import Cluster, ClusterEvent
from simulator.k8s.fields import ManifestError
from simulator.k8s.objects import AnalysisRun, Pod, ReplicaSet, Rollout
from simulator.k8s.store import WatchEvent
from simulator.manifests import load_text
from simulator.rollouts.tree import RolloutView, client_phase, render
from simulator.web import sse
from simulator.web.sse import EventQueue

__all__ = ["CLUSTER", "rollout_view", "setup_api"]

CLUSTER = web.AppKey("simulator.cluster", Cluster)
STREAMS = web.AppKey("simulator.streams", set[EventQueue])  # open event streams, ended on shutdown
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def rollout_view(cluster: Cluster, name: str, namespace: str = "default") -> RolloutView | None:
    store = cluster.store
    rollout = store.find(Rollout, name, namespace)
    if rollout is None:
        return None
    owner = f"Rollout/{name}"
    replica_sets = [r for r in store.list(ReplicaSet, namespace) if r.metadata.owner == owner]
    owners = {f"ReplicaSet/{r.name}" for r in replica_sets}
    pods = [p for p in store.list(Pod, namespace) if p.metadata.owner in owners]
    runs = [a for a in store.list(AnalysisRun, namespace) if a.metadata.owner == owner]
    return RolloutView(rollout, replica_sets, pods, runs)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body is not valid JSON"}), content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "expected a JSON object"}), content_type="application/json")
    return data


def _guard(handler: Handler) -> Handler:
    """Turn user errors into 400/404 JSON answers; the cluster itself is never touched by a bad call."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except operations.OperationError as exc:
            status = 404 if "not found" in str(exc) else 400
            return _error(status, str(exc))
        except ManifestError as exc:
            return _error(400, str(exc))

    return wrapped


async def apply_manifests(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    text = await request.text()
    if request.content_type == "application/json":
        try:
            text = str(json.loads(text).get("manifests", ""))
        except (ValueError, AttributeError):
            return _error(400, 'expected {"manifests": "<YAML>"} or a YAML body')
    loaded = load_text(text, "<request>")
    results = operations.apply(cluster.store, loaded.objects)
    return web.json_response({"results": results, "notices": loaded.notices})


def _namespace(request: web.Request) -> str:
    return request.query.get("namespace") or "default"


async def delete_manifests(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    loaded = load_text(await request.text(), "<request>")
    try:
        results = operations.delete(cluster.store, loaded.objects)
    except operations.OperationError as exc:
        return web.json_response({"error": str(exc), "results": exc.done}, status=404)
    return web.json_response({"results": results})


async def list_rollouts(request: web.Request) -> web.Response:
    """`?namespace=NS` (default: all namespaces)."""
    cluster = request.app[CLUSTER]
    items = []
    for rollout in cluster.store.list(Rollout, request.query.get("namespace") or None):
        phase, message = client_phase(rollout)
        st = rollout.status
        items.append(
            {
                "name": rollout.name,
                "namespace": rollout.metadata.namespace,
                "strategy": "BlueGreen" if "blueGreen" in (rollout.spec.get("strategy") or {}) else "Canary",
                "phase": phase,
                "message": message,
                "desired": int(rollout.spec.get("replicas", 1)),
                "current": st.replicas if st else 0,
                "ready": st.ready_replicas if st else 0,
                "updated": st.updated_replicas if st else 0,
                "available": st.available_replicas if st else 0,
            }
        )
    return web.json_response({"rollouts": items})


async def get_rollout(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    name = request.match_info["name"]
    view = rollout_view(cluster, name, _namespace(request))
    if view is None:
        return _error(404, f'rollouts.argoproj.io "{name}" not found')
    phase, message = client_phase(view.rollout)
    color = request.query.get("color") in ("1", "true")
    return web.json_response(
        {
            "phase": phase,
            "message": message,
            "rollout": view.rollout.to_json(),
            "replicaSets": [r.to_json() for r in view.replica_sets],
            "pods": [p.to_json() for p in view.pods],
            "analysisRuns": [a.to_json() for a in view.runs],
            "tree": render(view, cluster.clock.now(), color=color),
        }
    )


async def rollout_action(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    store = cluster.store
    name, action = request.match_info["name"], request.match_info["action"]
    ns = _namespace(request)
    body = await _body(request)
    if action == "promote":
        message = operations.promote(store, name, full=bool(body.get("full", False)), namespace=ns)
    elif action == "abort":
        message = operations.abort(store, name, namespace=ns)
    elif action == "retry":
        message = operations.retry(store, name, namespace=ns)
    elif action == "pause":
        message = operations.set_paused(store, name, True, namespace=ns)
    elif action == "restart":
        delay = body.get("in", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return _error(400, "in: expected seconds >= 0")
        message = operations.restart(store, name, cluster.clock.now(), delay=float(delay), namespace=ns)
    elif action == "undo":
        revision = body.get("toRevision")
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
            return _error(400, "toRevision: expected an integer")
        message = operations.undo(store, name, to_revision=revision, namespace=ns)
    elif action == "image":
        container, image = body.get("container"), body.get("image")
        if not isinstance(container, str) or not isinstance(image, str) or not image:
            return _error(400, 'expected {"container": "NAME" or "*", "image": "IMAGE"}')
        message = operations.set_image(store, name, container, image, namespace=ns)
    else:
        return _error(404, f"unknown action {action!r}")
    return web.json_response({"message": message})


async def crash_pod(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    name = request.match_info["name"]
    try:
        cluster.kubelet.crash(name)
    except KeyError:
        return _error(404, f'pods "{name}" not found')
    cluster.wake()
    return web.json_response({"message": f"pod '{name}' crashed"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `change` for every object write, `event` for every cluster event."""
    cluster = request.app[CLUSTER]
    queue: EventQueue = asyncio.Queue(maxsize=1000)

    def on_change(event: WatchEvent) -> None:
        obj = event.object
        payload = {
            "type": str(event.type),
            "kind": obj.kind,
            "name": obj.name,
            "resourceVersion": event.resource_version,
        }
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(("change", json.dumps(payload)))

    def on_event(event: ClusterEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(("event", json.dumps(event.to_json())))

    response = web.StreamResponse(headers=sse.HEADERS)
    await response.prepare(request)
    unsubscribe_changes = cluster.store.subscribe(on_change)
    unsubscribe_events = cluster.on_event(on_event)
    request.app[STREAMS].add(queue)
    try:
        await sse.pump(response, queue)
    finally:
        request.app[STREAMS].discard(queue)
        unsubscribe_changes()
        unsubscribe_events()
    return response


async def _end_streams(app: web.Application) -> None:
    streams: set[EventQueue] = app[STREAMS]
    for queue in list(streams):
        queue.put_nowait(None)


def setup_api(app: web.Application, cluster: Cluster) -> None:
    app[CLUSTER] = cluster
    app[STREAMS] = set()
    app.on_shutdown.append(_end_streams)
    app.router.add_post("/api/v1/manifests", _guard(apply_manifests))
    app.router.add_delete("/api/v1/manifests", _guard(delete_manifests))
    app.router.add_get("/api/v1/rollouts", _guard(list_rollouts))
    app.router.add_get("/api/v1/rollouts/{name}", _guard(get_rollout))
    app.router.add_post("/api/v1/rollouts/{name}/{action}", _guard(rollout_action))
    app.router.add_post("/api/v1/pods/{name}/crash", _guard(crash_pod))
    app.router.add_get("/api/v1/events", events)
