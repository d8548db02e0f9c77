"""Services drive the proxy: one pool per ReplicaSet, endpoints follow ready pods, promotion is the flip."""

from __future__ import annotations

from simulator import operations
from simulator.k8s.objects import ANNOTATION_DEADLINE, ANNOTATION_POOL, ANNOTATION_PROXY_SERVES, Pod, Service
from simulator.k8s.store import EventType, WatchEvent
from simulator.rollouts.tree import render
from simulator.web.api import rollout_view
from tests.simulator.fake_proxy import FakeProxy
from tests.simulator.harness import EXAMPLES, Sim

DEMO = EXAMPLES / "rollouts-demo" / "examples" / "blue-green"
NAME = "bluegreen-demo"
IMAGE = "argoproj/rollouts-demo"


def addresses(sim: Sim, revision: int) -> list[str]:
    return sorted(p.status.address for p in sim.pods(NAME, revision) if p.status.ready)


def pool(sim: Sim, revision: int) -> str:
    """The pool a revision is served by: its ReplicaSet's name."""
    return sim.rs(NAME, revision).name


def bound(proxy: FakeProxy) -> Sim:
    """A cluster attached to a proxy that starts, as the demo's does, with one empty placeholder pool."""
    sim = Sim()
    sim.proxy = proxy
    sim.cluster.attach(proxy, replaces=("unbound",))
    return sim


def placeholder_proxy() -> FakeProxy:
    return FakeProxy(pools={"unbound": []}, active="unbound", preview="unbound")


async def test_pools_are_named_after_replica_sets_with_revision_and_image() -> None:
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1 = pool(sim, 1)
    assert rev1 == f"{NAME}-{sim.hash(NAME, 1)}"
    assert proxy.routes_now() == (rev1, rev1)
    assert proxy.serving("active") == addresses(sim, 1)
    assert proxy.labels[rev1] == {"revision": "1", "image": f"{IMAGE}:blue"}
    assert set(proxy.pools) == {rev1}  # the placeholder is gone once nothing routes to it
    assert sim.rs(NAME, 1).metadata.annotations[ANNOTATION_POOL] == rev1

    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.cluster.settle()
    rev2 = pool(sim, 2)
    # The preview Service points at rev2 before it has pods: preview serves nothing yet (Argo #2641).
    assert proxy.routes_now() == (rev1, rev2) and proxy.serving("preview") == []
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    assert proxy.serving("active") == addresses(sim, 1)
    assert proxy.serving("preview") == addresses(sim, 2) != []
    assert proxy.labels[rev2] == {"revision": "2", "image": f"{IMAGE}:green"}
    generation = proxy.history[-1].generation
    await sim.promote(NAME)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    assert proxy.routes_now() == (rev2, rev2)
    assert proxy.history[-1].generation == generation + 1  # one flip
    assert proxy.serving("active") == addresses(sim, 2)

    # The third revision is a pool of its own, labelled with its image: no slot color shared with rev1.
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:yellow")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    rev3 = pool(sim, 3)
    assert len({rev1, rev2, rev3}) == 3
    assert proxy.routes_now() == (rev2, rev3)
    assert proxy.labels[rev3] == {"revision": "3", "image": f"{IMAGE}:yellow"}
    assert sim.rs(NAME, 3).metadata.annotations[ANNOTATION_POOL] == rev3
    await sim.abort(NAME)
    await sim.cluster.settle()
    assert proxy.routes_now() == (rev2, rev3)  # live traffic never left rev2; preview still names rev3
    assert proxy.serving("active") == addresses(sim, 2)


async def test_switch_refused_is_retried() -> None:
    """409 from the proxy (no healthy endpoint yet) is retried until the proxy accepts the flip."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    proxy.unhealthy.update(addresses(sim, 2))
    await sim.promote(NAME)
    await sim.advance(5)
    assert proxy.routes_now()[0] == pool(sim, 1)
    assert sim.cluster.binding is not None and "no healthy endpoint" in sim.cluster.binding.last_error
    proxy.unhealthy.clear()
    await sim.advance(1)
    assert proxy.routes_now() == (pool(sim, 2), pool(sim, 2))


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
    """The Services are the source of truth: a manual flip, lost endpoints or labels are put back (verify call)."""
    proxy = FakeProxy()
    sim = Sim(proxy=proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1 = pool(sim, 1)
    await proxy.set_endpoints("green", ["10.9.9.9:8080"])
    await proxy.switch("green", "green")
    proxy.pools[rev1] = []
    proxy.labels[rev1] = {"revision": "7"}
    await sim.advance(31)
    assert proxy.routes_now() == (rev1, rev1)
    assert proxy.serving("active") == addresses(sim, 1)
    assert proxy.labels[rev1]["revision"] == "1"


async def test_scaled_down_replica_set_leaves_the_proxy_after_the_switch() -> None:
    """The unrouted pool follows its ReplicaSet: warm during the scale-down delay, removed once scaled down —
    and never while a route names it (the proxy refuses that): the switch comes first."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1, old = pool(sim, 1), addresses(sim, 1)
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    await sim.promote(NAME)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev2 = pool(sim, 2)
    assert proxy.routes_now() == (rev2, rev2)
    assert proxy.pools[rev1] == old != []  # the old stack, still up for a fast rollback
    await sim.until(lambda: sim.rs(NAME, 1).spec.get("replicas") == 0 and not sim.pods(NAME, 1))
    await sim.cluster.settle()
    assert set(proxy.pools) == {rev2}
    assert proxy.pools[rev2] == addresses(sim, 2) != []
    switched = proxy.calls.index(("switch", rev2, rev2))
    assert proxy.calls.index(("delete_pool", rev1)) > switched
    assert proxy.calls.index(("delete_pool", "unbound")) < switched


async def test_rollback_relabels_the_pool_with_the_new_revision() -> None:
    """`undo` inside the scale-down delay brings rev1's ReplicaSet back as revision 3: same pool, new label."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1 = pool(sim, 1)
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    await sim.promote(NAME)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    operations.undo(sim.store, NAME)
    await sim.until(lambda: sim.rs(NAME, 3).name == rev1)
    await sim.until(lambda: proxy.routes_now()[1] == rev1 and proxy.labels[rev1]["revision"] == "3")
    assert proxy.labels[rev1] == {"revision": "3", "image": f"{IMAGE}:blue"}


async def test_old_stack_waits_until_the_proxy_serves_the_new_one() -> None:
    """The proxy refuses the flip (the new pods fail its health checks) for longer than scaleDownDelaySeconds
    (30 s): the old pods it still serves are never stopped. The Rollout waits "for post-promotion
    verification", as Argo waits for its target-group verification, and the delay counts from the moment
    the proxy serves the new pool."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    killed_while_live: list[str] = []

    def watch(event: WatchEvent) -> None:
        pod = event.object
        if event.type == EventType.DELETED and isinstance(pod, Pod) and pod.status.address in proxy.serving("active"):
            killed_while_live.append(pod.name)

    sim.store.subscribe(watch)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1 = pool(sim, 1)
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    rev2 = pool(sim, 2)
    proxy.unhealthy.update(addresses(sim, 2))
    await sim.promote(NAME)
    await sim.advance(120)  # four times the delay
    assert sim.selector(NAME) == sim.hash(NAME, 2)  # the store says "switched"...
    assert proxy.routes_now()[0] == rev1  # ...the proxy still serves rev1
    assert killed_while_live == []
    assert sim.rs(NAME, 1).replicas == 3 and len(addresses(sim, 1)) == 3
    assert ANNOTATION_DEADLINE not in sim.rs(NAME, 1).metadata.annotations  # the delay has not started
    status = sim.status(NAME)
    assert status.stable_rs == sim.hash(NAME, 1)
    assert (sim.phase(NAME), status.message) == ("Progressing", "waiting for post-promotion verification to complete")
    service = sim.store.get(Service, NAME)
    assert service.metadata.annotations[ANNOTATION_PROXY_SERVES] == sim.hash(NAME, 1)
    view = rollout_view(sim.cluster, NAME)
    assert view is not None
    tree = render(view, sim.cluster.clock.now())
    assert "Message:         waiting for post-promotion verification to complete" in tree

    proxy.unhealthy.clear()  # the proxy accepts the flip at its next attempt
    acked = sim.cluster.clock.now() + await sim.until(lambda: proxy.routes_now()[0] == rev2)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    assert sim.store.get(Service, NAME).metadata.annotations[ANNOTATION_PROXY_SERVES] == sim.hash(NAME, 2)
    assert sim.status(NAME).stable_rs == sim.hash(NAME, 2)
    waited = await sim.until(lambda: sim.rs(NAME, 1).replicas == 0)
    assert sim.cluster.clock.now() - acked == 30  # scaleDownDelaySeconds, counted from the proxy's flip
    assert waited <= 30
    await sim.until(lambda: not sim.pods(NAME, 1))
    assert killed_while_live == []
    assert proxy.routes_now() == (rev2, rev2)


async def test_abort_while_the_proxy_refuses_the_flip() -> None:
    """Aborting while the switch waits for the proxy: the active Service goes back to rev1, which the proxy
    never left, and rev2 is scaled down after abortScaleDownDelaySeconds as usual."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    rev1 = pool(sim, 1)
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:green")
    await sim.until(lambda: sim.phase(NAME) == "Paused")
    proxy.unhealthy.update(addresses(sim, 2))
    await sim.promote(NAME)
    await sim.advance(10)
    assert sim.status(NAME).message == "waiting for post-promotion verification to complete"
    await sim.abort(NAME)
    assert sim.phase(NAME) == "Degraded"
    assert sim.selector(NAME) == sim.hash(NAME, 1) == sim.status(NAME).stable_rs
    await sim.until(lambda: sim.rs(NAME, 2).replicas == 0, limit=60)
    assert proxy.routes_now()[0] == rev1 and proxy.serving("active") == addresses(sim, 1) != []
    assert sim.rs(NAME, 1).replicas == 3


async def test_services_say_what_the_proxy_serves_only_while_bound() -> None:
    """`bluegreen.dev/proxy-serves` follows the proxy's answers, and leaves a Service no Rollout binds any more
    (else a Rollout that later uses it, unbound, would wait for a proxy that is not there)."""
    proxy = placeholder_proxy()
    sim = bound(proxy)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    preview = f"{NAME}-preview"
    for service in (NAME, preview):
        assert sim.store.get(Service, service).metadata.annotations[ANNOTATION_PROXY_SERVES] == sim.hash(NAME, 1)
    rollout = sim.rollout(NAME)
    operations.delete(sim.store, [rollout])
    await sim.cluster.settle()
    for service in (NAME, preview):
        assert ANNOTATION_PROXY_SERVES not in sim.store.get(Service, service).metadata.annotations
