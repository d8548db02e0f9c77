"""The demo's dashboard: the guide's blue/green pictures, live, plus a server-side traffic generator.

`setup_dashboard(app, cluster, listeners)` adds to the demo's admin app (after `setup_api`):

| call | does |
| --- | --- |
| `GET /` and `/static/...` | the page (`simulator/web/static/`: plain HTML/CSS/JS, no CDN, works offline) |
| `GET /api/v1/dashboard/state` | the picture: Rollout, Services, ReplicaSets, pods, analysis runs, routes, events |
| `GET /api/v1/dashboard/events` | server-sent events: `state` when the picture changes, `traffic` twice a second |
| `GET /api/v1/traffic` | the traffic generator's aggregates |
| `POST /api/v1/traffic` `{"on": true, "rate": 10}` | start or stop the traffic (`rate`: requests/s per listener) |

The traffic generator sends `GET /color` through the proxy's active and preview listeners at a bounded
rate (never more than `MAX_IN_FLIGHT` requests outstanding) and records, per request, the listener, the
status, the pool (`x-served-by-color`: the proxy pool, named after the ReplicaSet), the pod (`X-Pod`), the
color the app answered (`GET /color`, what the strip shows) and the latency. It keeps requests/s per pod
and per pool and the error rate over the last `WINDOW` seconds (besides the totals since the start), and
a strip of the last `STRIP` answers per listener, like Argo's rollouts-demo page.

Failures are counted per listener only, under two names that never mean anything else: `errors` and
`errorRate` over the last `WINDOW` seconds, `failed` (of `requests`) since the start. No count adds the
listeners up: the preview answers 503 while a new revision's pods start (its Service selects them first,
Argo #2641), and a sum of both would read as live requests lost in a flip.

The picture names each proxy pool by the ReplicaSet it serves, with its revision and image; colors on the
page are the colors the pods answer, never a slot. When a listener's pool has no healthy endpoint (the
preview while a new revision's pods start, Argo #2641), the picture says why the listener answers 503.

Everything here runs on the admin app's loop; every loop is bounded and stopped on the app's shutdown.
Only `proxy.control.api` is used to read the proxy (through the Cluster's binding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from simulator.cluster import Cluster
from simulator.k8s.clock import parse_time
from simulator.k8s.objects import ANNOTATION_DEADLINE, ANNOTATION_POOL, HASH_LABEL, Pod, ReplicaSet, Rollout, Service
from simulator.k8s.store import WatchEvent
from simulator.rollouts.tree import client_phase
from simulator.web import sse
from simulator.web.api import rollout_view
from simulator.web.sse import EventQueue

__all__ = ["DASHBOARD", "STATIC", "Dashboard", "Traffic", "build_state", "setup_dashboard"]

STATIC: Final = Path(__file__).resolve().parent / "static"
LISTENERS: Final = ("active", "preview")
DEFAULT_RATE: Final = 10.0  # requests/s per listener: 20 req/s in all
MAX_RATE: Final = 50.0
MAX_IN_FLIGHT: Final = 40  # a slow- image never piles up more than this
REQUEST_TIMEOUT: Final = 5.0
WINDOW: Final = 10.0  # seconds of samples behind requests/s and the error rate (the recent window)
STRIP: Final = 100  # answers kept per listener
PUBLISH_EVERY: Final = 0.5  # traffic updates per second: 2
STATE_REFRESH: Final = 1.0  # the picture is rebuilt at least this often while someone watches (proxy health)
DEBOUNCE: Final = 0.05
EVENTS_SHOWN: Final = 30

Listeners = Callable[[], Mapping[str, int]]
StreamQueue = EventQueue


@dataclass(frozen=True, slots=True)
class Sample:
    """One request of the traffic generator."""

    at: float  # monotonic
    listener: str
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    pool: str  # x-served-by-color
    pod: str  # X-Pod
    color: str  # what GET /color answered
    latency: float  # seconds
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.status == 0 or self.status >= 500


class Traffic:
    """The "generate traffic" switch: `GET /color` through both listeners, aggregated for the page."""

    def __init__(
        self,
        listeners: Listeners,
        host: str = "127.0.0.1",
        *,
        rate: float = DEFAULT_RATE,
        on_update: Callable[[], None] = lambda: None,
    ) -> None:
        self._listeners = listeners
        self._host = host
        self.rate = rate
        self._on_update = on_update
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._window: deque[Sample] = deque()
        self._strips: dict[str, deque[Sample]] = {name: deque(maxlen=STRIP) for name in LISTENERS}
        self.totals: Counter[str] = Counter()
        self.skipped = 0
        self._started_at = 0.0

    @property
    def on(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, rate: float | None = None) -> None:
        if rate is not None:
            self.rate = rate
        if not self.on:
            self._started_at = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="dashboard-traffic")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._on_update()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        try:
            next_at = published_at = loop.time()
            while True:
                ports = self._ports()
                for listener in LISTENERS:
                    port = ports.get(listener)
                    if port is None:
                        continue
                    if len(self._in_flight) >= MAX_IN_FLIGHT:
                        self.skipped += 1
                        continue
                    task = asyncio.create_task(self._one(session, listener, port))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                now = loop.time()
                if now - published_at >= PUBLISH_EVERY:
                    published_at = now
                    self._on_update()
                next_at = max(next_at + 1.0 / self.rate, now)  # after a stall: go on, no burst to catch up
                await asyncio.sleep(max(0.0, next_at - now))
        finally:
            pending = list(self._in_flight)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await session.close()

    def _ports(self) -> Mapping[str, int]:
        try:
            return self._listeners()
        except Exception:  # the proxy is not listening (yet, or any more): send nothing this tick
            return {}

    async def _one(self, session: aiohttp.ClientSession, listener: str, port: int) -> None:
        started = time.monotonic()
        status, pool, pod, color, error = 0, "", "", "", ""
        try:
            async with session.get(f"http://{self._host}:{port}/color") as response:
                body = await response.read()
                status = response.status
                pool = response.headers.get("x-served-by-color", "")
                pod = response.headers.get("X-Pod", "")
                if status == 200:
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        answer = json.loads(body)
                        color = answer if isinstance(answer, str) else ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        self.record(Sample(time.monotonic(), listener, status, pool, pod, color, time.monotonic() - started, error))

    def record(self, sample: Sample) -> None:
        self._window.append(sample)
        self._strips[sample.listener].append(sample)
        self.totals[f"{sample.listener}.requests"] += 1
        if sample.failed:
            self.totals[f"{sample.listener}.failed"] += 1

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        while self._window and self._window[0].at < now - WINDOW:
            self._window.popleft()
        window = list(self._window)
        span = max(0.5, min(WINDOW, now - self._started_at)) if self.on else WINDOW  # rates settle at once
        per_pod: Counter[str] = Counter()
        per_pool: Counter[str] = Counter()
        listeners: dict[str, Any] = {}
        for s in window:
            if s.pod:
                per_pod[s.pod] += 1
            if s.pool:
                per_pool[s.pool] += 1
        for name in LISTENERS:
            mine = [s for s in window if s.listener == name]
            errors = sum(1 for s in mine if s.failed)
            latencies = sorted(s.latency for s in mine)
            by_pool = Counter(s.pool for s in mine if s.pool)
            answers = Counter(s.color for s in mine if s.color)
            listeners[name] = {
                "rps": round(len(mine) / span, 1),
                "errors": errors,  # in the window, as "errorRate"
                "errorRate": round(errors / len(mine), 3) if mine else 0.0,
                "latencyMs": {
                    "p50": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
                    "max": round(latencies[-1] * 1000, 1) if latencies else None,
                },
                "byPool": {k: round(v / span, 1) for k, v in sorted(by_pool.items())},
                "byColor": {k: round(v / span, 1) for k, v in sorted(answers.items())},
                "requests": self.totals[f"{name}.requests"],  # since the start, as "failed"
                "failed": self.totals[f"{name}.failed"],
                "strip": [
                    {"color": s.color, "pool": s.pool, "pod": s.pod, "status": s.status, "error": s.error}
                    for s in self._strips[name]
                ],
            }
        return {
            "on": self.on,
            "rate": self.rate,
            "window": WINDOW,
            "listeners": listeners,  # failures per listener only (the module's docstring)
            "pods": {k: round(v / span, 1) for k, v in sorted(per_pod.items())},
            "pools": {k: round(v / span, 1) for k, v in sorted(per_pool.items())},
            "skipped": self.skipped,
        }


def _selects(selector: Mapping[str, str], pod: Pod) -> bool:
    return bool(selector) and all(pod.metadata.labels.get(k) == v for k, v in selector.items())


def _bound_rollout(cluster: Cluster, name: str | None) -> Rollout | None:
    if name:
        return cluster.store.find(Rollout, name)
    if cluster.binding is not None and (bound := cluster.binding.bound_rollout()) is not None:
        return bound
    rollouts = cluster.store.list(Rollout)
    return rollouts[0] if rollouts else None


def _image(template_spec: Mapping[str, Any]) -> str:
    containers = template_spec.get("containers") or [{}]
    return str(containers[0].get("image", ""))


async def build_state(cluster: Cluster, name: str | None = None) -> dict[str, Any]:
    """The picture the page draws, in one JSON object (times are epoch seconds of the cluster clock)."""
    now = cluster.clock.now()
    proxy: dict[str, Any] | None = None
    binding = cluster.binding
    if binding is not None:
        try:
            served = await binding.control.status()
            proxy = {
                "routes": served.routes.to_json(),
                "pools": [p.to_json() for p in served.pools],
                "lastError": binding.last_error,
            }
        except Exception as exc:  # the picture must still draw when the proxy cannot answer
            proxy = {"error": str(exc) or type(exc).__name__}
    rollouts = [r.name for r in cluster.store.list(Rollout)]
    state: dict[str, Any] = {"now": now, "rollouts": rollouts, "proxy": proxy, "rollout": None}
    state["events"] = [e.to_json() for e in cluster.events[-EVENTS_SHOWN:]]
    served_pools = {p["name"]: p for p in (proxy or {}).get("pools", [])}
    rollout = _bound_rollout(cluster, name)
    view = rollout_view(cluster, rollout.name, rollout.metadata.namespace) if rollout is not None else None
    if rollout is None or view is None:
        return state
    status = rollout.status
    phase, message = client_phase(rollout)
    strategy = (rollout.spec.get("strategy") or {}).get("blueGreen") or {}
    pools = dict(binding.pools) if binding is not None else {}
    replica_sets = sorted(view.replica_sets, key=lambda r: r.revision)
    current = next((r for r in replica_sets if status and r.pod_hash == status.current_pod_hash), None)
    by_hash = {r.pod_hash: r for r in replica_sets}

    def pool_of(pod_hash: str) -> str:
        rs = by_hash.get(pod_hash)
        annotated = rs.metadata.annotations.get(ANNOTATION_POOL, "") if rs is not None else ""
        return pools.get(pod_hash) or annotated

    services = []
    for role in ("active", "preview"):
        svc_name = strategy.get(f"{role}Service")
        service = cluster.store.find(Service, svc_name, rollout.metadata.namespace) if svc_name else None
        if service is None:
            continue
        selector = service.selector
        selected = [p for p in view.pods if _selects(selector, p)]
        pod_hash = selector.get(HASH_LABEL, "")
        rs = by_hash.get(pod_hash)
        services.append(
            {
                "name": service.name,
                "role": role,
                "selector": selector,
                "podHash": pod_hash,
                "pool": pool_of(pod_hash) if pod_hash else "",
                "revision": rs.revision if rs is not None else None,
                "image": _image((rs.spec.get("template") or {}).get("spec") or {}) if rs is not None else "",
                "pods": [p.name for p in selected],
                "endpoints": [p.name for p in selected if p.status.ready],
            }
        )
    pods_by_rs: dict[str, list[dict[str, Any]]] = {}
    for pod in sorted(view.pods, key=lambda p: (p.metadata.creation, p.name)):
        pods_by_rs.setdefault(pod.metadata.owner or "", []).append(
            {
                "name": pod.name,
                "image": pod.image,
                "ready": pod.status.ready,
                "phase": pod.status.phase,
                "reason": pod.status.reason,
                "restarts": pod.status.restarts,
                "address": pod.status.address,
                "podHash": pod.metadata.labels.get(HASH_LABEL, ""),
            }
        )
    rs_json = []
    for rs in replica_sets:
        tags = []
        if status is not None:
            if rs.pod_hash == status.stable_rs:
                tags.append("stable")
            if rs.pod_hash == status.active_selector:
                tags.append("active")
            if rs.pod_hash == status.preview_selector and rs.pod_hash != status.active_selector:
                tags.append("preview")
        deadline = rs.metadata.annotations.get(ANNOTATION_DEADLINE)
        rs_json.append(
            {
                "name": rs.name,
                "revision": rs.revision,
                "podHash": rs.pod_hash,
                "pool": pool_of(rs.pod_hash),
                "image": _image((rs.spec.get("template") or {}).get("spec") or {}),
                "replicas": rs.replicas,
                "readyReplicas": rs.status.ready_replicas,
                "availableReplicas": rs.status.available_replicas,
                "tags": tags,
                "scaleDownAt": parse_time(deadline) if deadline else None,
                "pods": pods_by_rs.get(f"ReplicaSet/{rs.name}", []),
            }
        )
    runs = []
    for run in sorted(view.runs, key=lambda r: (r.metadata.creation, r.name)):
        data = run.status.to_json()
        runs.append(
            {
                "name": run.name,
                "type": run.metadata.labels.get("rollout-type", ""),
                "revision": int(run.metadata.annotations.get("rollout.argoproj.io/revision", "0")),
                "phase": data["phase"],
                "message": data.get("message", ""),
                "metrics": data["metricResults"],
            }
        )
    if proxy is not None and "routes" in proxy:
        proxy["unavailable"] = {
            role: why
            for role in LISTENERS
            if (why := _why_unavailable(role, proxy["routes"].get(role), served_pools, replica_sets, view.pods))
        }
    state["rollout"] = {
        "name": rollout.name,
        "namespace": rollout.metadata.namespace,
        "phase": phase,
        "message": message,
        "revision": current.revision if current is not None else None,
        "image": _image((rollout.spec.get("template") or {}).get("spec") or {}),
        "replicas": rollout.spec.get("replicas", 1),
        "strategy": {
            "activeService": strategy.get("activeService"),
            "previewService": strategy.get("previewService"),
            "autoPromotionEnabled": strategy.get("autoPromotionEnabled", True),
            "scaleDownDelaySeconds": strategy.get("scaleDownDelaySeconds", 30),
            "prePromotionAnalysis": bool(strategy.get("prePromotionAnalysis")),
            "postPromotionAnalysis": bool(strategy.get("postPromotionAnalysis")),
        },
        "status": status.to_json() if status is not None else None,
        "pauseReasons": [p.reason for p in status.pause_conditions] if status else [],
        "aborted": bool(status and status.abort),
        "abortMessage": (status.abort_message if status else "") or "",
        "services": services,
        "replicaSets": rs_json,
        "analysisRuns": runs,
    }
    return state


def _why_unavailable(
    role: str, pool: str | None, served: Mapping[str, Any], replica_sets: Sequence[ReplicaSet], pods: Sequence[Pod]
) -> str:
    """Why the `role` listener answers 503 now (its pool has no healthy endpoint), in one sentence; "" if it serves."""
    entry = served.get(pool or "")
    if entry is None or any(e["healthy"] for e in entry["endpoints"]):
        return ""
    rs = next((r for r in replica_sets if pool in (r.name, r.pod_hash)), None)
    if rs is None:
        return f"The {role} listener answers 503: its pool {pool} has no endpoint yet."
    mine = [p for p in pods if p.metadata.labels.get(HASH_LABEL) == rs.pod_hash]
    ready = sum(1 for p in mine if p.status.ready)
    who = f"revision {rs.revision}"
    if rs.replicas == 0 and not mine:
        return f"The {role} listener answers 503: {who} is scaled down, and the {role} Service still selects it."
    if ready == 0:
        return (
            f"The {role} listener answers 503 while {who}'s pods start ({ready}/{rs.replicas} ready): "
            f"the {role} Service selects them before they are ready, and the proxy sends no request to a pod "
            "that is not ready."
        )
    return (
        f"The {role} listener answers 503: {who} has {ready} ready pod(s), not yet healthy in the proxy "
        "(its health check has to pass first)."
    )


class Dashboard:
    """Fans the picture and the traffic out to every open event stream of the page."""

    def __init__(self, cluster: Cluster, listeners: Listeners, host: str = "127.0.0.1") -> None:
        self.cluster = cluster
        self._listeners = listeners
        self.traffic = Traffic(listeners, host, on_update=self._traffic_changed)
        self._streams: set[StreamQueue] = set()
        self._dirty = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._last_state = ""
        self._unsubscribe: list[Callable[[], None]] = []

    # --- the picture ------------------------------------------------------------------------------

    def _changed(self, _: object = None) -> None:
        self._dirty.set()

    def _traffic_changed(self) -> None:
        self._broadcast("traffic", json.dumps(self.traffic.snapshot()))

    def _broadcast(self, kind: str, data: str) -> None:
        for queue in list(self._streams):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((kind, data))

    async def _state_json(self) -> tuple[str, str]:
        """(the JSON to send, the same without the time: what decides whether anything changed)."""
        state = await self.state()
        now = state.pop("now")
        key = json.dumps(state, sort_keys=True)
        state["now"] = now
        return json.dumps(state), key

    async def _publish(self) -> None:
        """One bounded loop: rebuild the picture when the store changes (debounced) or every second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), STATE_REFRESH)
                await asyncio.sleep(DEBOUNCE)  # let a burst of writes (a whole reconcile pass) land
            self._dirty.clear()
            if not self._streams:
                continue
            try:
                data, key = await self._state_json()
            except Exception as exc:  # never let one bad picture end the stream
                data, key = json.dumps({"error": str(exc)}), ""
            if key != self._last_state:
                self._last_state = key
                self._broadcast("state", data)

    def _start(self) -> None:
        if self._publisher is None:
            self._unsubscribe = [
                self.cluster.store.subscribe(self._on_watch),
                self.cluster.on_event(self._changed),
            ]
            self._publisher = asyncio.create_task(self._publish(), name="dashboard-publisher")

    def _on_watch(self, _: WatchEvent) -> None:
        self._dirty.set()

    async def close(self) -> None:
        for queue in list(self._streams):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        await self.traffic.stop()
        task, self._publisher = self._publisher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- HTTP ---------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def state(self, rollout: str | None = None) -> dict[str, Any]:
        state = await build_state(self.cluster, rollout)
        try:
            ports = self._listeners()
        except Exception:  # before the proxy has bound its sockets
            ports = {}
        state["listeners"] = {k: v for k, v in ports.items() if k in LISTENERS}
        return state

    async def get_state(self, request: web.Request) -> web.Response:
        return web.json_response(await self.state(request.query.get("rollout") or None))

    async def get_traffic(self, request: web.Request) -> web.Response:
        return web.json_response(self.traffic.snapshot())

    async def post_traffic(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
            return _error(400, 'expected {"on": true|false, "rate": requests/s per listener (optional)}')
        rate = body.get("rate")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE
        ):
            return _error(400, f"rate: expected a number of requests/s per listener in (0, {MAX_RATE:g}]")
        if body["on"]:
            self.traffic.start(float(rate) if rate is not None else None)
            self._traffic_changed()
        else:
            await self.traffic.stop()
        return web.json_response(self.traffic.snapshot())

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: `state` (the picture, when it changes) and `traffic` (while generating)."""
        self._start()
        queue: StreamQueue = asyncio.Queue(maxsize=200)
        response = web.StreamResponse(headers=sse.HEADERS)
        await response.prepare(request)
        self._streams.add(queue)
        try:
            data, _ = await self._state_json()
            traffic = json.dumps(self.traffic.snapshot())
            first = f"event: state\ndata: {data}\n\nevent: traffic\ndata: {traffic}\n\n".encode()
            await sse.pump(response, queue, first)
        finally:
            self._streams.discard(queue)
        return response


DASHBOARD = web.AppKey("simulator.dashboard", Dashboard)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def setup_dashboard(
    app: web.Application, cluster: Cluster, listeners: Listeners, *, host: str = "127.0.0.1"
) -> Dashboard:
    """Serve the dashboard and the traffic generator on `app` (the demo's admin app).

    `listeners` returns the proxy's bound ports by role (`{"active": 8080, "preview": 8081, ...}`); it is
    only called once traffic is switched on, so it may read ports that are bound after this call.
    Calling it again on the same app changes nothing.
    """
    if DASHBOARD in app:
        return app[DASHBOARD]
    dashboard = app[DASHBOARD] = Dashboard(cluster, listeners, host)

    async def on_shutdown(_: web.Application) -> None:
        await dashboard.close()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", dashboard.index)
    app.router.add_static("/static/", STATIC, append_version=False)
    app.router.add_get("/api/v1/dashboard/state", dashboard.get_state)
    app.router.add_get("/api/v1/dashboard/events", dashboard.events)
    app.router.add_get("/api/v1/traffic", dashboard.get_traffic)
    app.router.add_post("/api/v1/traffic", dashboard.post_traffic)
    return dashboard
