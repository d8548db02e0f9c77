"""Services drive the proxy: colors alternate, endpoints follow ready pods, promotion is the flip."""

from __future__ import annotations

from simulator import operations
from simulator.k8s.objects import ANNOTATION_COLOR
from tests.simulator.fake_proxy import FakeProxy
from tests.simulator.harness import EXAMPLES, Sim

DEMO = EXAMPLES / "rollouts-demo" / "examples" / "blue-green"
NAME = "bluegreen-demo"


def addresses(sim: Sim, revision: int) -> list[str]:
    return sorted(p.status.address for p in sim.pods(NAME, revision) if p.status.ready)


async def test_rollout_moves_proxy_routes() -> None:
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    assert (proxy.routes_now(), proxy.serving("active")) == (("blue", "blue"), addresses(sim, 1))
    assert sim.rs(NAME, 1).metadata.annotations[ANNOTATION_COLOR] == "blue"

    operations.set_image(sim.store, NAME, "*", "argoproj/rollouts-demo:green")
    await sim.cluster.settle()
    # The preview Service points at rev2 before it has pods: preview serves nothing yet (Argo #2641).
    assert proxy.routes_now() == ("blue", "green") and proxy.serving("preview") == []
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    assert proxy.serving("active") == addresses(sim, 1)
    assert proxy.serving("preview") == addresses(sim, 2) != []
    generation = proxy.history[-1].generation
    await sim.promote(NAME)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    assert proxy.routes_now() == ("green", "green")
    assert proxy.history[-1].generation == generation + 1  # one flip
    assert proxy.serving("active") == addresses(sim, 2)

    # The next revision takes the idle color again: blue.
    operations.set_image(sim.store, NAME, "*", "argoproj/rollouts-demo:yellow")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    assert proxy.routes_now() == ("green", "blue")
    assert sim.rs(NAME, 3).metadata.annotations[ANNOTATION_COLOR] == "blue"
    await sim.abort(NAME)
    await sim.cluster.settle()
    assert proxy.routes_now() == ("green", "blue")  # live traffic never left green
    assert proxy.serving("active") == addresses(sim, 2)


async def test_switch_refused_is_retried() -> None:
    """409 from the proxy (no healthy endpoint yet) is retried until the proxy accepts the flip."""
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    operations.set_image(sim.store, NAME, "*", "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    proxy.unhealthy.update(addresses(sim, 2))
    await sim.promote(NAME)
    await sim.advance(5)
    assert proxy.routes_now()[0] == "blue"
    assert sim.cluster.binding is not None and "no healthy endpoint" in sim.cluster.binding.last_error
    proxy.unhealthy.clear()
    await sim.advance(1)
    assert proxy.routes_now() == ("green", "green")


async def test_crashed_pod_leaves_the_pool_and_comes_back() -> None:
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    victim = sim.pods(NAME, 1)[0]
    sim.cluster.kubelet.crash(victim.name)
    await sim.cluster.settle()
    crashed = sim.store.get(type(victim), victim.name)
    assert (crashed.status.reason, crashed.status.restarts, crashed.status.ready) == ("CrashLoopBackOff", 1, False)
    assert len(proxy.serving("active")) == 2
    await sim.until(lambda: len(proxy.serving("active")) == 3)
    assert sim.store.get(type(victim), victim.name).status.reason == "Running"


async def test_hand_made_switch_is_reconciled() -> None:
    """The Services are the source of truth: a manual flip or lost endpoints are put back (verify call)."""
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    await proxy.set_endpoints("green", ["10.9.9.9:8080"])
    await proxy.switch("green", "green")
    proxy.pools["blue"] = []
    await sim.advance(31)
    assert proxy.routes_now() == ("blue", "blue")
    assert proxy.serving("active") == addresses(sim, 1)


async def test_scaled_down_pods_leave_the_proxy() -> None:
    """The unrouted pool follows its ReplicaSet: warm during the scale-down delay, empty once scaled down."""
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    old = addresses(sim, 1)
    operations.set_image(sim.store, NAME, "*", "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    await sim.promote(NAME)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    assert proxy.routes_now() == ("green", "green")
    assert proxy.pools["blue"] == old != []  # the old stack, still up for a fast rollback
    await sim.until(lambda: sim.rs(NAME, 1).spec.get("replicas") == 0 and not sim.pods(NAME, 1))
    await sim.cluster.settle()
    assert proxy.pools["blue"] == []
    assert proxy.pools["green"] == addresses(sim, 2) != []
