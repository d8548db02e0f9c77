"""`spec.restartAt` (`kubectl argo rollouts restart`): pods created before it are evicted one at a time while
every other pod is available, stable ReplicaSet first; then `status.restartedAt` (spec §1.1, step 6 of §2.2)."""

from __future__ import annotations

from simulator import operations
from simulator.k8s.objects import Pod
from tests.simulator.harness import EXAMPLES, Sim

CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"
NAME = "rollout-bluegreen"


async def test_restart_replaces_every_pod_one_at_a_time() -> None:
    sim = Sim(startup=5.0)
    await sim.apply(CANONICAL)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    before = {p.name for p in sim.pods(NAME, 1)}
    assert len(before) == 2
    phases: list[tuple[str, str]] = []
    most_missing = 0

    def watch() -> bool:
        nonlocal most_missing
        ready = sum(1 for p in sim.pods(NAME, 1) if p.status.ready)
        most_missing = max(most_missing, 2 - ready)
        phases.append((sim.phase(NAME), sim.status(NAME).message))
        return sim.status(NAME).restarted_at is not None

    message = operations.restart(sim.store, NAME, sim.cluster.clock.now())
    assert message == "rollout 'rollout-bluegreen' restarts in 0s"
    await sim.cluster.settle()
    assert (sim.phase(NAME), sim.status(NAME).message) == ("Progressing", "rollout is restarting")
    await sim.until(watch)
    after = {p.name for p in sim.pods(NAME, 1)}
    assert after.isdisjoint(before) and len(after) == 2
    assert most_missing == 1  # never more than one pod down at once
    assert ("Progressing", "rollout is restarting") in phases
    await sim.until(lambda: sim.phase(NAME) == "Healthy")  # the last new pod still starts
    assert sim.status(NAME).to_json()["restartedAt"] == sim.rollout(NAME).spec["restartAt"]
    assert len(sim.replica_sets(NAME)) == 1  # a restart is no new revision


async def test_restart_in_the_future_waits_and_covers_both_stacks() -> None:
    sim = Sim()
    await sim.apply(CANONICAL)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    operations.set_image(sim.store, NAME, "*", "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    old = {p.name for p in sim.store.list(Pod)}
    assert len(old) == 4
    message = operations.restart(sim.store, NAME, sim.cluster.clock.now(), delay=30)
    assert message == "rollout 'rollout-bluegreen' restarts in 30s"
    await sim.advance(20)
    assert {p.name for p in sim.store.list(Pod)} == old  # not yet
    await sim.until(lambda: sim.status(NAME).restarted_at is not None)
    assert {p.name for p in sim.store.list(Pod)}.isdisjoint(old)
    assert sim.phase(NAME) == "Paused"  # the update waits for its promotion as before
