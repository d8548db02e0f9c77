"""A virtual-time cluster with Argo's e2e vocabulary: apply, UpdateSpec, promote, counts, selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simulator import operations
from simulator.cluster import Cluster
from simulator.k8s.objects import HASH_LABEL, AnalysisRun, Pod, ReplicaSet, Rollout, Service
from simulator.k8s.rollout_status import RolloutStatus
from simulator.k8s.store import WatchEvent
from simulator.manifests import load_path, load_text
from simulator.workloads.kubelet import PodTiming
from tests.simulator.fake_proxy import FakeProxy

EXAMPLES = Path(__file__).parent / "argo_examples"
E2E = EXAMPLES / "e2e-inline"
FUNCTIONAL = EXAMPLES / "argo-rollouts" / "test" / "e2e" / "functional"


def read(path: Path) -> str:
    """Test data is small and local; reading it synchronously inside a test is fine."""
    return path.read_text(encoding="utf-8")


class Sim:
    def __init__(self, *, proxy: FakeProxy | None = None, startup: float = 1.0, bind: str | None = None) -> None:
        self.proxy = proxy
        self.cluster = Cluster.virtual(control=proxy, bind=bind, timing=PodTiming(startup=startup))
        self.store = self.cluster.store
        self._updates = 0
        self.history: dict[str, list[tuple[str, str]]] = {}
        self.store.subscribe(self._observe)

    def _observe(self, event: WatchEvent) -> None:
        obj = event.object
        if isinstance(obj, Rollout) and obj.status is not None:
            seen = self.history.setdefault(obj.name, [])
            entry = (str(obj.status.phase), obj.status.message)
            if not seen or seen[-1] != entry:
                seen.append(entry)

    # --- driving ---------------------------------------------------------------------------------

    async def apply(self, path: Path | str) -> None:
        operations.apply(self.store, load_path(path).objects)
        await self.cluster.settle()

    async def apply_text(self, text: str) -> None:
        operations.apply(self.store, load_text(text).objects)
        await self.cluster.settle()

    async def apply_doc(self, path: Path, kind: str) -> None:
        """Only the documents of one kind from a file (Argo's tests apply some objects later)."""
        docs = [d for d in yaml.safe_load_all(read(path)) if d and d.get("kind") == kind]
        await self.apply_text(yaml.safe_dump_all(docs))

    async def advance(self, seconds: float) -> None:
        await self.cluster.advance(seconds)

    async def until(self, check: Any, limit: float = 600.0) -> float:
        return await self.cluster.advance_until(check, limit)

    async def update(self, name: str) -> None:
        """Argo e2e `UpdateSpec()`: a new revision by stamping an annotation into the pod template."""
        self._updates += 1
        await self.patch(name, {"spec": {"template": {"metadata": {"annotations": {"update": str(self._updates)}}}}})

    async def patch(self, name: str, patch: dict[str, Any]) -> None:
        operations.patch_spec(self.store, name, patch)
        await self.cluster.settle()

    async def promote(self, name: str, full: bool = False) -> None:
        operations.promote(self.store, name, full=full)
        await self.cluster.settle()

    async def abort(self, name: str) -> None:
        operations.abort(self.store, name)
        await self.cluster.settle()

    async def retry(self, name: str) -> None:
        operations.retry(self.store, name)
        await self.cluster.settle()

    # --- observing -------------------------------------------------------------------------------

    def rollout(self, name: str) -> Rollout:
        return self.store.get(Rollout, name)

    def status(self, name: str) -> RolloutStatus:
        status = self.rollout(name).status
        assert status is not None
        return status

    def phase(self, name: str) -> str:
        return str(self.status(name).phase)

    def replica_sets(self, name: str) -> dict[int, ReplicaSet]:
        owned = [r for r in self.store.list(ReplicaSet) if r.metadata.owner == f"Rollout/{name}"]
        return {r.revision: r for r in owned}

    def rs(self, name: str, revision: int) -> ReplicaSet:
        return self.replica_sets(name)[revision]

    def hash(self, name: str, revision: int) -> str:
        return self.rs(name, revision).pod_hash

    def pods(self, name: str, revision: int) -> list[Pod]:
        rs = self.rs(name, revision)
        return [p for p in self.store.list(Pod) if p.metadata.owner == f"ReplicaSet/{rs.name}"]

    def sizes(self, name: str) -> dict[int, int]:
        """Revision -> number of pods, as `kubectl get rs` shows them."""
        return {rev: len(self.pods(name, rev)) for rev in sorted(self.replica_sets(name))}

    def selector(self, service: str) -> str:
        return self.store.get(Service, service).selector.get(HASH_LABEL, "")

    def revision_of(self, name: str, pod_hash: str) -> int | None:
        return next((rev for rev, rs in self.replica_sets(name).items() if rs.pod_hash == pod_hash), None)

    def counts(self, name: str) -> str:
        """desired/current/updated/ready/available, as Argo's e2e `ExpectReplicaCounts`."""
        ro, st = self.rollout(name), self.status(name)
        desired = ro.spec.get("replicas", 1)
        return f"{desired}/{st.replicas}/{st.updated_replicas}/{st.ready_replicas}/{st.available_replicas}"

    def runs(self, name: str) -> list[AnalysisRun]:
        return [a for a in self.store.list(AnalysisRun) if a.metadata.owner == f"Rollout/{name}"]

    def condition(self, name: str, type_: str) -> tuple[str, str] | None:
        c = self.status(name).condition(type_)
        return (c.status, c.reason) if c else None

    def events(self, name: str) -> list[str]:
        return [e.reason for e in self.cluster.events if e.name == name]


def patches(test: str) -> list[dict[str, Any]]:
    """The JSON merge patches an Argo e2e test sends, in order."""
    docs = yaml.safe_load_all(read(E2E / f"{test}.patches.yaml"))
    return [d for d in docs if d]
