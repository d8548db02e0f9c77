"""The binding of one Rollout's Services to the proxy: Services in, pools and routes out.

Each ReplicaSet the Services point at gets a color, which is the name of its proxy pool: the active
one keeps its color, the preview one takes the other (so colors alternate blue, green, blue... as in
the guide). The ready pods a Service selects become that pool's endpoints (`set_endpoints`), and the
routes follow the Services (`switch`). Promotion in the Rollout is therefore the proxy's flip. Only
the control interface is used, so the proxy may be in-process or remote.
"""

from __future__ import annotations

import logging

from proxy.control.api import ConflictError, ControlError, ProxyControl, Routes
from simulator.k8s.objects import ANNOTATION_COLOR, HASH_LABEL, Pod, ReplicaSet, Rollout, Service
from simulator.k8s.store import Store
from simulator.rollouts.spec import parse_rollout_spec

__all__ = ["COLORS", "Binding"]

COLORS = ("blue", "green")
RETRY_SECONDS = 1.0
# Like Argo's traffic routers: besides setting the desired state, read it back now and then, so a
# hand-made `bluegreen switch` or a restarted proxy is reconciled to what the Services say.
VERIFY_SECONDS = 30.0
log = logging.getLogger("simulator.binding")


def _other(color: str) -> str:
    return COLORS[1] if color == COLORS[0] else COLORS[0]


class Binding:
    def __init__(self, store: Store, control: ProxyControl, rollout: str | None = None) -> None:
        self._store = store
        self.control = control
        self._rollout = rollout
        self.colors: dict[str, str] = {}  # pod hash -> pool
        self._sent: dict[str, list[str]] = {}
        self._routes: Routes | None = None
        self._verified_at: float | None = None
        self.last_error = ""

    def bound_rollout(self) -> Rollout | None:
        if self._rollout is not None:
            return self._store.find(Rollout, self._rollout)
        rollouts = self._store.list(Rollout)
        return rollouts[0] if len(rollouts) == 1 else None

    def _endpoints(self, service: Service) -> list[str]:
        selector = service.selector
        if not selector:
            return []
        return sorted(
            p.status.address
            for p in self._store.list(Pod, service.metadata.namespace)
            if p.status.ready and p.status.address and all(p.metadata.labels.get(k) == v for k, v in selector.items())
        )

    def _ready_pods(self, namespace: str, pod_hash: str | None) -> list[str]:
        if pod_hash is None:
            return []
        return sorted(
            p.status.address
            for p in self._store.list(Pod, namespace)
            if p.status.ready and p.status.address and p.metadata.labels.get(HASH_LABEL) == pod_hash
        )

    def _color(self, pod_hash: str, avoid: str | None) -> str:
        color = self.colors.get(pod_hash)
        if color is None or color == avoid:
            if avoid is not None:
                color = _other(avoid)
            else:
                color = self._routes.active if self._routes and self._routes.active in COLORS else COLORS[0]
            self.colors.pop(pod_hash, None)
            self.colors[pod_hash] = color  # last in the dict: the newest holder of its color
        return color

    async def sync(self, now: float) -> list[float]:
        rollout = self.bound_rollout()
        if rollout is None or rollout.status is None:
            return []
        spec, _, _ = parse_rollout_spec(rollout.spec)
        bg = spec.blue_green
        ns = rollout.metadata.namespace
        active = self._store.find(Service, bg.active_service, ns) if bg else None
        if bg is None or active is None:
            return []
        preview = self._store.find(Service, bg.preview_service, ns) if bg.preview_service else None
        try:
            if self._verified_at is None or now >= self._verified_at + VERIFY_SECONDS:
                await self._verify()
                self._verified_at = now
            if self._routes is None:
                self._routes = await self.control.routes()
            active_hash = active.selector.get(HASH_LABEL) or rollout.status.stable_rs
            if not active_hash:
                return []
            active_color = self._color(active_hash, None)
            pools = {active_color: self._endpoints(active)}
            preview_color: str | None = None
            if preview is not None:
                preview_hash = preview.selector.get(HASH_LABEL) or active_hash
                preview_color = active_color if preview_hash == active_hash else self._color(preview_hash, active_color)
                if preview_color != active_color:
                    pools[preview_color] = self._endpoints(preview)
            for color in COLORS:
                # A pool no Service points at keeps its ReplicaSet's ready pods: they leave the proxy as
                # it scales down, instead of staying there as endpoints probed forever.
                if color not in pools:
                    last = [h for h, c in self.colors.items() if c == color]
                    pools[color] = self._ready_pods(ns, last[-1] if last else None)
            self._label_replica_sets(rollout)
            for pool, endpoints in pools.items():
                if self._sent.get(pool) != endpoints:
                    await self.control.set_endpoints(pool, endpoints)
                    self._sent[pool] = endpoints
            routes = self._routes
            if routes.active != active_color or (preview_color is not None and routes.preview != preview_color):
                self._routes = await self.control.switch(active_color, preview_color)
            self.last_error = ""
            return [self._verified_at + VERIFY_SECONDS]
        except ConflictError as exc:
            # Typically: the new pool's endpoints are not healthy in the proxy yet. Try again shortly.
            self.last_error = exc.message
            self._routes = None
            return [now + RETRY_SECONDS]
        except ControlError as exc:
            self.last_error = exc.message
            log.warning("proxy refused a control call: %s", exc.message)
            self._routes = None
            self._sent.clear()
            return [now + RETRY_SECONDS]

    async def _verify(self) -> None:
        """Forget what we believe the proxy has wherever the proxy says otherwise."""
        status = await self.control.status()
        self._routes = status.routes
        for pool, endpoints in list(self._sent.items()):
            actual = status.pool(pool)
            if actual is None or sorted(e.address for e in actual.endpoints) != endpoints:
                del self._sent[pool]

    def _label_replica_sets(self, rollout: Rollout) -> None:
        owner = f"Rollout/{rollout.name}"
        for rs in self._store.list(ReplicaSet, rollout.metadata.namespace):
            color = self.colors.get(rs.pod_hash)
            if rs.metadata.owner == owner and color and rs.metadata.annotations.get(ANNOTATION_COLOR) != color:
                rs.metadata.annotations[ANNOTATION_COLOR] = color
                self._store.update(rs)
