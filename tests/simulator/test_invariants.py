"""Random operator sessions on virtual time; invariants that must hold after every step."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from simulator import operations
from simulator.k8s.objects import HASH_LABEL, Pod, Service
from tests.simulator.fake_proxy import FakeProxy
from tests.simulator.harness import EXAMPLES, Sim

DEMO = EXAMPLES / "rollouts-demo" / "examples" / "blue-green"
NAME = "bluegreen-demo"

steps = st.one_of(
    st.tuples(st.just("image"), st.sampled_from(["green", "yellow", "bad-red", "purple", "pink"])),
    st.tuples(st.just("promote"), st.booleans()),
    st.tuples(st.just("abort"), st.none()),
    st.tuples(st.just("retry"), st.none()),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 3, 20, 40, 700])),
    st.tuples(st.just("crash"), st.integers(0, 5)),
    st.tuples(st.just("paused"), st.booleans()),
    st.tuples(st.just("replicas"), st.integers(1, 4)),
    st.tuples(st.just("undo"), st.none()),
)


async def session(actions: list[tuple[str, object]]) -> None:
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    for action, arg in actions:
        if action == "image":
            operations.set_image(sim.store, NAME, "*", f"argoproj/rollouts-demo:{arg}")
        elif action == "promote":
            operations.promote(sim.store, NAME, full=bool(arg))
        elif action == "abort":
            operations.abort(sim.store, NAME)
        elif action == "retry":
            operations.retry(sim.store, NAME)
        elif action == "advance":
            assert isinstance(arg, float | int)
            await sim.advance(arg)
        elif action == "crash":
            pods = sim.store.list(Pod)
            assert isinstance(arg, int)
            if pods and pods[arg % len(pods)].status.started_at is not None:
                sim.cluster.kubelet.crash(pods[arg % len(pods)].name)
        elif action == "paused":
            operations.set_paused(sim.store, NAME, bool(arg))
        elif action == "replicas":
            await sim.patch(NAME, {"spec": {"replicas": arg}})
        elif action == "undo":
            try:
                operations.undo(sim.store, NAME)
            except operations.OperationError:
                pass
        await sim.cluster.settle()
        check(sim, proxy)


def check(sim: Sim, proxy: FakeProxy) -> None:
    status = sim.status(NAME)
    replica_sets = {rs.pod_hash: rs for rs in sim.replica_sets(NAME).values()}
    active = sim.store.get(Service, "bluegreen-demo").selector.get(HASH_LABEL, "")
    assert active, "the active Service lost its hash (Argo #4750)"
    assert active in replica_sets
    assert status.stable_rs in replica_sets
    spec_replicas = sim.rollout(NAME).spec["replicas"]
    assert replica_sets[status.stable_rs].replicas == spec_replicas, "the stable stack shrank"
    # Live traffic only reaches ready pods of the ReplicaSet the active Service selects.
    ready = {
        p.status.address for p in sim.store.list(Pod) if p.status.ready and p.metadata.labels.get(HASH_LABEL) == active
    }
    assert set(proxy.serving("active")) <= ready


@settings(max_examples=20, deadline=None)
@given(st.lists(steps, min_size=1, max_size=10))
def test_operator_sessions_keep_invariants(actions: list[tuple[str, object]]) -> None:
    asyncio.run(session(actions))
