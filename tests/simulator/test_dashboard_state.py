"""The dashboard's picture on virtual time: pools by ReplicaSet, why a listener answers 503, recent error rates."""

from __future__ import annotations

import time

from simulator import operations
from simulator.web.dashboard import WINDOW, Sample, Traffic, build_state
from tests.simulator.fake_proxy import FakeProxy
from tests.simulator.harness import EXAMPLES, Sim

DEMO = EXAMPLES / "rollouts-demo" / "examples" / "blue-green"
NAME = "bluegreen-demo"
IMAGE = "argoproj/rollouts-demo"


async def test_state_names_pools_by_revision_and_image_and_explains_the_preview_503() -> None:
    proxy = FakeProxy()
    sim = Sim(proxy=proxy, startup=5.0)
    await sim.apply(DEMO)
    await sim.until(lambda: sim.phase(NAME) == "Healthy")
    state = await build_state(sim.cluster)
    assert state["proxy"]["unavailable"] == {}
    rev1 = sim.rs(NAME, 1).name
    services = {s["role"]: s for s in state["rollout"]["services"]}
    assert {k: services["active"][k] for k in ("pool", "revision", "image")} == {
        "pool": rev1,
        "revision": 1,
        "image": f"{IMAGE}:blue",
    }
    assert [(r["pool"], r["image"]) for r in state["rollout"]["replicaSets"]] == [(rev1, f"{IMAGE}:blue")]
    assert "color" not in services["active"]  # no slot color
    served = {p["name"]: p["labels"] for p in state["proxy"]["pools"]}
    assert served[rev1] == {"revision": "1", "image": f"{IMAGE}:blue"}

    # The preview Service selects revision 2 at once; its pods start for 5 s: the preview answers 503.
    operations.set_image(sim.store, NAME, "*", f"{IMAGE}:yellow")
    await sim.cluster.settle()
    state = await build_state(sim.cluster)
    why = state["proxy"]["unavailable"]
    assert set(why) == {"preview"}
    assert "503 while revision 2's pods start (0/3 ready)" in why["preview"], why
    services = {s["role"]: s for s in state["rollout"]["services"]}
    assert (services["preview"]["revision"], services["preview"]["image"]) == (2, f"{IMAGE}:yellow")

    # Ready in the cluster, not yet healthy in the proxy: a different reason.
    await sim.until(lambda: len([p for p in sim.pods(NAME, 2) if p.status.ready]) == 3)
    proxy.unhealthy.update(proxy.pools[sim.rs(NAME, 2).name])
    why = (await build_state(sim.cluster))["proxy"]["unavailable"]
    assert "not yet healthy in the proxy" in why["preview"], why
    proxy.unhealthy.clear()
    assert (await build_state(sim.cluster))["proxy"]["unavailable"] == {}


def sample(age: float, status: int) -> Sample:
    return Sample(time.monotonic() - age, "active", status, "pool-a", "pod-a", "blue" if status == 200 else "", 0.001)


def test_error_rate_is_over_the_recent_window_and_totals_since_the_start() -> None:
    assert WINDOW == 10.0
    traffic = Traffic(dict)
    for s in (sample(30, 503), sample(29, 503), sample(8, 503), sample(7, 200), sample(1, 200), sample(0, 200)):
        traffic.record(s)
    active = traffic.snapshot()["listeners"]["active"]
    # The two failures of 30 s ago are out of the window; the one of 8 s ago is in it.
    assert (active["errors"], active["errorRate"]) == (1, 0.25)
    assert (active["failed"], active["requests"]) == (3, 6)  # since the start
    assert traffic.snapshot()["window"] == 10.0


def test_failures_are_counted_per_listener_and_the_preview_503s_are_never_live() -> None:
    """A rollout's usual traffic: the preview answers 503 twice while the new pods start, live traffic never
    fails. No count of the snapshot adds the listeners up (a total of 2 "errors" beside the live listener's 0
    failed read as live requests lost in a flip); `errors` is the window's, `failed` the start's, per listener."""
    traffic = Traffic(dict)
    for age in (9, 8, 7, 6):
        traffic.record(Sample(time.monotonic() - age, "active", 200, "pool-a", "pod-a", "blue", 0.001))
    for age, status in ((9, 200), (8, 503), (7, 503), (6, 200)):
        color = "yellow" if status == 200 else ""
        traffic.record(Sample(time.monotonic() - age, "preview", status, "pool-b", "pod-b", color, 0.001))
    snapshot = traffic.snapshot()
    active, preview = snapshot["listeners"]["active"], snapshot["listeners"]["preview"]
    assert {k: active[k] for k in ("errors", "errorRate", "failed", "requests")} == {
        "errors": 0,
        "errorRate": 0.0,
        "failed": 0,
        "requests": 4,
    }
    assert {k: preview[k] for k in ("errors", "errorRate", "failed", "requests")} == {
        "errors": 2,
        "errorRate": 0.5,
        "failed": 2,
        "requests": 4,
    }
    assert not {"errors", "errorRate", "failed", "requests"} & set(snapshot), snapshot
