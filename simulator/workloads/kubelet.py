"""The kubelet: moves pods through their lives on the cluster's clock and runs their apps.

Pending (ContainerCreating for `startup` seconds, or ImagePullBackOff for an image that does not pull)
-> Running -> Ready after the container's `readinessProbe.initialDelaySeconds`. `crash(pod)` kills a
container: not ready, CrashLoopBackOff for `backoff` seconds, then a restart (restartCount + 1) that
goes through readiness again. Deleted pods stop serving after a grace period, as Kubernetes lets
endpoints drain before it kills a terminating pod.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from simulator.k8s.objects import Pod
from simulator.k8s.store import Store
from simulator.workloads.app import parse_image
from simulator.workloads.pods import PodRuntime

__all__ = ["Kubelet", "PodTiming"]


@dataclass(frozen=True)
class PodTiming:
    startup: float = 1.0  # ContainerCreating
    backoff: float = 10.0  # CrashLoopBackOff before a restart
    termination_grace: float = 2.0  # real time only: a deleted pod keeps serving this long


class _Live:
    """The running side of one pod, as the runtime sees it."""

    def __init__(self, pod: Pod) -> None:
        self.name = pod.name
        self.image = pod.image
        self.env = pod.env
        self.ready = False
        self.crash_requested = False
        self.restart_at: float | None = None

    def is_ready(self) -> bool:
        return self.ready


def _readiness_delay(pod: Pod) -> float:
    probe = pod.container.get("readinessProbe") or {}
    return float(probe.get("initialDelaySeconds", 0) or 0)


class Kubelet:
    def __init__(self, store: Store, runtime: PodRuntime, timing: PodTiming, *, virtual: bool) -> None:
        self._store = store
        self._runtime = runtime
        self._timing = timing
        self._virtual = virtual
        self._live: dict[str, _Live] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def crash(self, pod_name: str) -> None:
        """Kill the pod's container at the next sync (tests, the dashboard's fault injection)."""
        live = self._live.get(pod_name)
        if live is None:
            raise KeyError(f"pod {pod_name!r} is not running")
        live.crash_requested = True

    async def sync(self, now: float) -> list[float]:
        wakeups: list[float] = []
        pods = {p.name: p for p in self._store.list(Pod)}
        for name in list(self._live):
            if name not in pods:
                await self._stop(name)
        for pod in pods.values():
            before = pod.status.to_json(), pod.status.ready_since, pod.status.started_at
            wake = await self._sync_pod(pod, now)
            if wake is not None:
                wakeups.append(wake)
            if (pod.status.to_json(), pod.status.ready_since, pod.status.started_at) != before:
                self._store.update(pod)
        return wakeups

    async def _sync_pod(self, pod: Pod, now: float) -> float | None:
        st = pod.status
        live = self._live.get(pod.name)
        if live is None:
            live = self._live[pod.name] = _Live(pod)
        if live.crash_requested and st.started_at is not None:
            live.crash_requested = False
            live.ready = False
            await self._runtime.stop(pod.name)
            st.ready, st.ready_since, st.started_at, st.address = False, None, None, ""
            st.restarts += 1
            st.reason = "CrashLoopBackOff"
            live.restart_at = now + self._timing.backoff
        if st.started_at is None:
            if live.restart_at is not None:
                if now < live.restart_at:
                    return live.restart_at
                start_at = live.restart_at
            else:
                if not parse_image(pod.image).pullable:
                    st.reason = "ImagePullBackOff"
                    return None
                start_at = pod.metadata.creation + self._timing.startup
            if now < start_at:
                return start_at
            live.restart_at = None
            st.address = await self._runtime.start(live)
            st.phase, st.reason, st.started_at = "Running", "Running", now
        ready_at = st.started_at + _readiness_delay(pod)
        if not st.ready:
            if now < ready_at:
                return ready_at
            st.ready, st.ready_since = True, now
            live.ready = True
        return None

    async def _stop(self, name: str) -> None:
        live = self._live.pop(name)
        live.ready = False
        if self._virtual:
            await self._runtime.stop(name)
            return

        async def later() -> None:
            await asyncio.sleep(self._timing.termination_grace)
            await self._runtime.stop(name)

        task = asyncio.create_task(later())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for task in list(self._stopping):
            task.cancel()
        await asyncio.gather(*self._stopping, return_exceptions=True)
        for name in list(self._live):
            self._live.pop(name)
        await self._runtime.close()
