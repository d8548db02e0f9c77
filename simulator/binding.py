"""The binding of one Rollout's Services to the proxy: Services in, pools and routes out.

Each ReplicaSet a Service points at is a proxy pool named after it (`rollout-bluegreen-547f9bd7cb`, the
ReplicaSet's name; its pod-template hash when the name is not a valid pool name), labelled with its
`revision` and `image` (the pool's metric labels). The ready pods a Service selects become that pool's
endpoints (`set_endpoints`), and the routes follow the Services (`switch`): promotion in the Rollout is
the proxy's flip. A pool no Service points at keeps its ReplicaSet's ready pods (the old stack stays warm
during `scaleDownDelaySeconds`) and is removed once the ReplicaSet is scaled down — after the routes left
it, since the proxy refuses to delete a routed pool, as Argo switches a Service's selector before it
scales the old ReplicaSet down. Only the control interface is used, so the proxy may be in-process or remote.

What the proxy acknowledged serving is written back into the store: `bluegreen.dev/proxy-serves` on the
active and preview Services holds the pod-template hash of the ReplicaSet whose pool that listener routes
to, as the proxy last answered (a refused flip leaves it on the old one). The Rollout controller reads it as
Argo reads its ALB target-group verification: the new ReplicaSet is not marked stable, so the old one is
neither given its scale-down deadline nor scaled down, until the proxy serves what the active Service says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

from proxy.control.api import ConflictError, ControlError, NotFoundError, ProxyControl, Routes
from simulator.k8s.objects import (
    ANNOTATION_POOL,
    ANNOTATION_PROXY_SERVES,
    HASH_LABEL,
    Pod,
    ReplicaSet,
    Rollout,
    Service,
)
from simulator.k8s.store import Store
from simulator.rollouts.spec import parse_rollout_spec

__all__ = ["Binding", "pool_name"]

RETRY_SECONDS = 1.0
# Like Argo's traffic routers: besides setting the desired state, read it back now and then, so a
# hand-made `bluegreen switch` or a restarted proxy is reconciled to what the Services say.
VERIFY_SECONDS = 30.0
# The proxy's pool names (proxy/config.py): 1-63 letters, digits, '-', '_' or '.'.
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
log = logging.getLogger("simulator.binding")


def pool_name(rs: ReplicaSet) -> str:
    """The proxy pool that serves `rs`: its name, or its pod-template hash when the name is too long."""
    return rs.name if _POOL_NAME.match(rs.name) else rs.pod_hash


def _labels(rs: ReplicaSet) -> dict[str, str]:
    containers = ((rs.spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    return {"revision": str(rs.revision), "image": str(containers[0].get("image", ""))[:256]}


class Binding:
    def __init__(
        self,
        store: Store,
        control: ProxyControl,
        rollout: str | None = None,
        *,
        replaces: Collection[str] = (),
    ) -> None:
        """`replaces`: pools of the proxy's own config that the binding takes the routes from (the demo's
        empty placeholder); they are removed once no route names them."""
        self._store = store
        self.control = control
        self._rollout = rollout
        self.pools: dict[str, str] = {}  # pod hash -> pool, for every pool this binding created
        self._replaced = set(replaces)
        self._sent: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._routes: Routes | None = None
        self._verified_at: float | None = None
        self._marked: set[tuple[str, str]] = set()  # (namespace, name) of Services carrying ANNOTATION_PROXY_SERVES
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

    def _ready_pods(self, namespace: str, pod_hash: str) -> list[str]:
        return sorted(
            p.status.address
            for p in self._store.list(Pod, namespace)
            if p.status.ready and p.status.address and p.metadata.labels.get(HASH_LABEL) == pod_hash
        )

    async def sync(self, now: float) -> list[float]:
        rollout = self.bound_rollout()
        if rollout is None or rollout.status is None:
            self._unmark(set())
            return []
        spec, _, _ = parse_rollout_spec(rollout.spec)
        bg = spec.blue_green
        ns = rollout.metadata.namespace
        active = self._store.find(Service, bg.active_service, ns) if bg else None
        if bg is None or active is None:
            self._unmark(set())
            return []
        preview = self._store.find(Service, bg.preview_service, ns) if bg.preview_service else None
        listeners = {"active": active.name, "preview": preview.name if preview is not None else None}
        self._unmark({(ns, name) for name in listeners.values() if name})
        owner = f"Rollout/{rollout.name}"
        replica_sets = {rs.pod_hash: rs for rs in self._store.list(ReplicaSet, ns) if rs.metadata.owner == owner}
        try:
            if self._verified_at is None or now >= self._verified_at + VERIFY_SECONDS:
                await self._verify()
                self._verified_at = now
            if self._routes is None:
                self._routes = await self.control.routes()
            self._mark_served(ns, listeners, self._routes, replica_sets)
            active_hash = active.selector.get(HASH_LABEL) or rollout.status.stable_rs
            active_rs = replica_sets.get(active_hash)
            if active_rs is None:
                return []
            active_pool = self._pool(active_rs)
            wanted = {active_pool: (self._endpoints(active), _labels(active_rs))}
            preview_pool: str | None = None
            if preview is not None:
                preview_rs = replica_sets.get(preview.selector.get(HASH_LABEL) or active_hash)
                if preview_rs is None:  # a selector no ReplicaSet of ours has (yet): the preview stays
                    preview_pool = self._routes.preview
                else:
                    preview_pool = self._pool(preview_rs)
                    if preview_pool != active_pool:
                        wanted[preview_pool] = (self._endpoints(preview), _labels(preview_rs))
            # A pool no Service points at keeps its ReplicaSet's ready pods while the ReplicaSet has any:
            # warm for a fast rollback during the scale-down delay, removed once it is scaled down.
            for pod_hash, pool in self.pools.items():
                rs = replica_sets.get(pod_hash)
                if pool not in wanted and rs is not None and (rs.replicas > 0 or rs.status.ready_replicas > 0):
                    wanted[pool] = (self._ready_pods(ns, pod_hash), _labels(rs))
            self._annotate(replica_sets.values())
            for pool, (endpoints, labels) in wanted.items():
                if self._sent.get(pool) != (endpoints, labels):
                    await self.control.set_endpoints(pool, endpoints, labels)
                    self._sent[pool] = (endpoints, labels)
            routes = self._routes
            if routes.active != active_pool or (preview_pool is not None and routes.preview != preview_pool):
                self._routes = routes = await self.control.switch(active_pool, preview_pool)
                self._mark_served(ns, listeners, routes, replica_sets)
            await self._remove_unwanted(set(wanted), routes)
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

    def _pool(self, rs: ReplicaSet) -> str:
        pool = self.pools[rs.pod_hash] = self.pools.get(rs.pod_hash) or pool_name(rs)
        return pool

    async def _remove_unwanted(self, wanted: set[str], routes: Routes) -> None:
        """Remove the pools of scaled-down ReplicaSets (and the replaced ones) once no route names them."""
        routed = {routes.active, routes.preview}
        for pod_hash, pool in list(self.pools.items()):
            if pool not in wanted and pool not in routed:
                await self._delete(pool)
                del self.pools[pod_hash]
        for pool in list(self._replaced):
            if pool not in routed and pool not in wanted:
                await self._delete(pool)
                self._replaced.discard(pool)

    async def _delete(self, pool: str) -> None:
        try:
            await self.control.delete_pool(pool)
        except NotFoundError:
            pass  # already gone: what we wanted
        self._sent.pop(pool, None)

    async def _verify(self) -> None:
        """Forget what we believe the proxy has wherever the proxy says otherwise."""
        status = await self.control.status()
        self._routes = status.routes
        for pool, (endpoints, labels) in list(self._sent.items()):
            actual = status.pool(pool)
            if (
                actual is None
                or sorted(e.address for e in actual.endpoints) != endpoints
                or dict(actual.labels) != labels
            ):
                del self._sent[pool]

    def _mark_served(
        self, ns: str, listeners: dict[str, str | None], routes: Routes, replica_sets: dict[str, ReplicaSet]
    ) -> None:
        """`bluegreen.dev/proxy-serves` on each bound Service: the hash of the ReplicaSet whose pool the proxy
        said its listener routes to (`routes` is always a proxy's answer: a read, or an accepted switch)."""
        hashes = {pool_name(rs): pod_hash for pod_hash, rs in replica_sets.items()}
        hashes.update({pool: pod_hash for pod_hash, pool in self.pools.items()})
        for listener, name in listeners.items():
            if name is None:
                continue
            served = hashes.get(routes.active if listener == "active" else routes.preview or "", "")
            service = self._store.find(Service, name, ns)
            if service is None:
                continue
            self._marked.add((ns, name))
            if service.metadata.annotations.get(ANNOTATION_PROXY_SERVES) != served:
                service.metadata.annotations[ANNOTATION_PROXY_SERVES] = served
                self._store.update(service)

    def _unmark(self, keep: set[tuple[str, str]]) -> None:
        """Services no longer bound say nothing about the proxy (else their Rollout would wait for it)."""
        for ns, name in self._marked - keep:
            service = self._store.find(Service, name, ns)
            if service is not None and ANNOTATION_PROXY_SERVES in service.metadata.annotations:
                del service.metadata.annotations[ANNOTATION_PROXY_SERVES]
                self._store.update(service)
            self._marked.discard((ns, name))

    def _annotate(self, replica_sets: Collection[ReplicaSet]) -> None:
        """`bluegreen.dev/pool` on each ReplicaSet that is (or was) a proxy pool, for `-o json` and the dashboard."""
        for rs in replica_sets:
            pool = self.pools.get(rs.pod_hash)
            if pool and rs.metadata.annotations.get(ANNOTATION_POOL) != pool:
                rs.metadata.annotations[ANNOTATION_POOL] = pool
                self._store.update(rs)
