"""The Cluster: store, clock, kubelet, controllers and the proxy binding, driven by one scheduler.

A *pass* runs every component once in dependency order (kubelet, ReplicaSets, Rollouts, analysis,
garbage collection, binding); `settle` repeats passes until one changes nothing, which is how
Kubernetes' level-triggered controllers converge. Components report when they next need to look
(a readiness delay, a scale-down deadline, an analysis interval). On a `VirtualClock` `advance` jumps
from one such moment to the next, so hours of rollout take milliseconds; on real time `run` sleeps
until the next moment or until something changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

from proxy.control.api import ProxyControl
from simulator.analysis.controller import AnalysisController
from simulator.analysis.fetch import Fetcher, HttpFetcher, ServiceResolver, VirtualFetcher
from simulator.analysis.prometheus import PrometheusClient
from simulator.binding import Binding
from simulator.k8s.clock import Clock, VirtualClock
from simulator.k8s.objects import AnalysisRun, Pod, ReplicaSet, Resource, Rollout
from simulator.k8s.store import Store
from simulator.rollouts.actions import Event
from simulator.rollouts.controller import RolloutController, make_run
from simulator.workloads.kubelet import Kubelet, PodTiming
from simulator.workloads.pods import PodRuntime, VirtualRuntime
from simulator.workloads.replicaset_controller import ReplicaSetController

__all__ = ["Cluster", "ClusterEvent", "NotSettledError"]

MAX_PASSES = 200
log = logging.getLogger("simulator.cluster")


class NotSettledError(RuntimeError):
    pass


@dataclass(frozen=True)
class ClusterEvent:
    """A Kubernetes-style event: what happened to which object, and when."""

    time: float
    kind: str
    name: str
    reason: str
    message: str
    type: str = "Normal"

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time,
            "kind": self.kind,
            "name": self.name,
            "reason": self.reason,
            "message": self.message,
            "type": self.type,
        }


class Cluster:
    def __init__(
        self,
        clock: Clock,
        runtime: PodRuntime,
        *,
        control: ProxyControl | None = None,
        bind: str | None = None,
        timing: PodTiming | None = None,
        seed: int | None = None,
        fetcher: Fetcher | None = None,
        prometheus_address: str | None = None,
    ) -> None:
        """`prometheus_address`: where `prometheus` metrics without an `address` query (Argo's
        ARGO_ROLLOUTS_PROMETHEUS_ADDRESS); also settable later, as `cluster.prometheus.default_address`."""
        self.clock = clock
        self.rng = random.Random(seed)
        self.store = Store(clock.now)
        self.runtime = runtime
        self.events: list[ClusterEvent] = []
        self._listeners: list[Callable[[ClusterEvent], None]] = []
        self._wake: asyncio.Event | None = None
        resolver = ServiceResolver(self.store)
        if fetcher is None:
            if isinstance(runtime, VirtualRuntime):
                fetcher = VirtualFetcher(resolver, self.rng)
            else:
                fetcher = HttpFetcher(resolver)
        self.fetcher = fetcher
        self.kubelet = Kubelet(self.store, runtime, timing or PodTiming(), virtual=clock.virtual)
        self.replicasets = ReplicaSetController(self.store, self.rng)
        self.rollouts = RolloutController(self.store, lambda ro, action: make_run(self.store, ro, action), self._record)
        self.prometheus = PrometheusClient(prometheus_address)
        self.analysis = AnalysisController(
            self.store, fetcher, self.rng, virtual=clock.virtual, wake=self.wake, prometheus=self.prometheus
        )
        self.binding = Binding(self.store, control, bind) if control is not None else None
        self.store.subscribe(lambda _: self.wake())

    def attach(self, control: ProxyControl, bind: str | None = None, *, replaces: Collection[str] = ()) -> None:
        """Drive a proxy from now on (the demo starts the proxy after building the cluster); `replaces`: the
        proxy's placeholder pools, removed once the routes name the bound Rollout's ReplicaSets."""
        self.binding = Binding(self.store, control, bind, replaces=replaces)
        self.wake()

    @classmethod
    def virtual(
        cls,
        *,
        control: ProxyControl | None = None,
        bind: str | None = None,
        timing: PodTiming | None = None,
        seed: int = 1,
    ) -> Cluster:
        """Virtual time, pods without sockets: the test configuration."""
        return cls(VirtualClock(), VirtualRuntime(), control=control, bind=bind, timing=timing, seed=seed)

    # --- events -----------------------------------------------------------------------------------

    def _record(self, rollout: Rollout, event: Event) -> None:
        self.emit(
            ClusterEvent(
                self.clock.now(),
                "Rollout",
                rollout.name,
                event.reason,
                event.message,
                "Warning" if event.warning else "Normal",
            )
        )

    def emit(self, event: ClusterEvent) -> None:
        self.events.append(event)
        del self.events[:-1000]
        for listener in self._listeners:
            listener(event)

    def on_event(self, listener: Callable[[ClusterEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- scheduling -------------------------------------------------------------------------------

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _pass(self) -> list[float]:
        now = self.clock.now()
        wakeups = await self.kubelet.sync(now)
        wakeups += self.replicasets.sync(now)
        wakeups += self.rollouts.sync(now)
        wakeups += await self.analysis.sync(now)
        self._collect_garbage()
        if self.binding is not None:
            wakeups += await self.binding.sync(now)
        return wakeups

    def _collect_garbage(self) -> None:
        """Owner references: objects whose owner is gone are deleted, as Kubernetes' GC does."""
        rollouts = {r.name for r in self.store.list(Rollout)}
        replica_sets = {r.name for r in self.store.list(ReplicaSet)}
        owned: list[tuple[type[Resource], set[str], str]] = [
            (ReplicaSet, rollouts, "Rollout/"),
            (AnalysisRun, rollouts, "Rollout/"),
            (Pod, replica_sets, "ReplicaSet/"),
        ]
        for cls, owners, prefix in owned:
            for obj in self.store.list(cls):
                owner = obj.metadata.owner
                if owner and owner.startswith(prefix) and owner.removeprefix(prefix) not in owners:
                    self.store.delete(cls, obj.name, obj.metadata.namespace)

    async def settle(self) -> float | None:
        """Run passes until nothing changes; returns when a component next needs to look, if ever."""
        for _ in range(MAX_PASSES):
            version = self.store.resource_version
            wakeups = await self._pass()
            if self.store.resource_version == version:
                if not self.clock.virtual:
                    # Real time moved during the pass: a moment that is already due means "look again now".
                    return min(wakeups, default=None)
                now = self.clock.now()
                return min((w for w in wakeups if w > now), default=None)
        raise NotSettledError(f"the cluster did not settle within {MAX_PASSES} passes")

    async def advance(self, seconds: float) -> None:
        """Virtual time only: move `seconds` ahead, stopping at every moment a component asked for."""
        clock = self.clock
        assert isinstance(clock, VirtualClock), "advance() needs a VirtualClock"
        target = clock.now() + seconds
        while True:
            next_at = await self.settle()
            if next_at is None or next_at > target:
                clock.set(target)
                await self.settle()
                return
            clock.set(next_at)

    async def advance_until(self, predicate: Callable[[], bool], limit: float = 3600.0) -> float:
        """Virtual time only: advance to the first moment `predicate` holds; returns the seconds taken."""
        clock = self.clock
        assert isinstance(clock, VirtualClock), "advance_until() needs a VirtualClock"
        start = clock.now()
        while True:
            next_at = await self.settle()
            if predicate():
                return clock.now() - start
            if next_at is None or next_at > start + limit:
                raise TimeoutError(f"condition not reached within {limit} s of virtual time")
            clock.set(next_at)

    async def run(self) -> None:
        """Real time: reconcile whenever something changes or a component's moment comes."""
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            try:
                next_at = await self.settle()
            except Exception:  # a bug in one pass must not take the demo down
                log.exception("reconcile pass failed; retrying in 1 s")
                next_at = self.clock.now() + 1.0
            timeout = None if next_at is None else max(0.0, next_at - self.clock.now())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.analysis.close()
        await self.kubelet.close()
        if isinstance(self.fetcher, HttpFetcher):
            await self.fetcher.close()
