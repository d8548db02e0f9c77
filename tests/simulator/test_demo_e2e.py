"""End to end on real time: the demo (real ProxyServer, pods as loopback servers) under live traffic.

Durations are shortened (scale-down delay 2 s, smoke test 3 x 0.2 s) so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from simulator.demo import BUNDLED_MANIFESTS, Demo, DemoConfig
from simulator.k8s.objects import AnalysisTemplate, Rollout
from simulator.manifests import load_path
from simulator.operations import merge_patch
from simulator.workloads.kubelet import PodTiming
from tests.support import wait_until

pytestmark = pytest.mark.slow
NAME = "rollout-bluegreen"


def manifests(**blue_green: Any) -> Any:
    loaded = load_path(BUNDLED_MANIFESTS)
    for obj in loaded.objects:
        if isinstance(obj, Rollout):
            obj.spec = merge_patch(obj.spec, {"strategy": {"blueGreen": {"scaleDownDelaySeconds": 2, **blue_green}}})
            # A bad-COLOR image fails half its requests by default, so a 3-measurement smoke test would pass
            # one run in eight: make it fail every request, so the abort below is certain.
            obj.spec["template"]["spec"]["containers"][0]["env"] = [{"name": "ERROR_RATE", "value": "100"}]
        if isinstance(obj, AnalysisTemplate):
            obj.spec["metrics"][0].update(count=3, interval="200ms")
    return loaded


def fast_config(**more: Any) -> DemoConfig:
    """A demo on free ports whose pods start in 0.2 s and whose proxy probes every 200 ms."""
    timing = PodTiming(startup=0.2, termination_grace=1.0)
    return DemoConfig(active_port=0, preview_port=0, admin_port=0, timing=timing, health_interval="200ms", **more)


@contextlib.asynccontextmanager
async def running_demo(**blue_green: Any) -> AsyncIterator[tuple[Demo, aiohttp.ClientSession]]:
    config = fast_config()
    demo = Demo(manifests(**blue_green), config)
    await demo.start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield demo, http
    finally:
        await demo.stop()


def url(demo: Demo, listener: str, path: str) -> str:
    return f"http://127.0.0.1:{demo.ports[listener]}{path}"


async def color(http: aiohttp.ClientSession, demo: Demo, listener: str) -> str:
    async with http.get(url(demo, listener, "/color")) as response:
        text = await response.text()
        return str(json.loads(text)) if response.status == 200 else f"HTTP {response.status}"


async def api(http: aiohttp.ClientSession, demo: Demo, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, url(demo, "admin", path), json=body) as response:
        data = await response.json()
        assert response.status == 200, data
        return data


async def eventually(check: Callable[[], Any], within: float = 15.0, explain: Callable[[], Any] | None = None) -> None:
    async def message() -> str:
        return "condition" + (await explain() if explain is not None else "")

    await wait_until(check, within, 0.1, message=message, ignore=(aiohttp.ClientError, ValueError, AssertionError))


def rollout_view(http: aiohttp.ClientSession, demo: Demo) -> Callable[[], Any]:
    """On a timeout, say where the rollout was: phase, message, tree and analysis runs."""

    async def explain() -> str:
        try:
            view = await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}")
        except Exception as exc:  # the explanation must not hide the failure
            return f" (no view: {exc!r})"
        runs = json.dumps([r.get("status", {}) for r in view.get("analysisRuns", [])])[:3000]
        return f"\nphase {view['phase']}: {view['message']}\n{view['tree']}\nanalysis runs: {runs}"

    return explain


async def phase(http: aiohttp.ClientSession, demo: Demo) -> str:
    return str((await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}"))["phase"])


class Traffic:
    """Continuous requests to the active listener; every answer is counted."""

    def __init__(self, http: aiohttp.ClientSession, demo: Demo) -> None:
        self.http, self.demo = http, demo
        self.answers: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                self.answers[await color(self.http, self.demo, "active")] += 1
            except aiohttp.ClientError as exc:
                self.answers[f"error {type(exc).__name__}"] += 1
            await asyncio.sleep(0.005)  # paces the requests (about 100/s with their latency)

    async def more(self, color: str, n: int = 20) -> None:
        """Until `n` more requests were answered by `color`: traffic seen after the change, not only during it."""
        target = self.answers[color] + n
        await wait_until(lambda: self.answers[color] >= target, message=f"{n} more answers from {color}")

    def __enter__(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def failures(self) -> dict[str, int]:
        """Anything but a color is a failed request (5xx, connection errors)."""
        return {k: v for k, v in self.answers.items() if k.startswith(("HTTP", "error"))}


async def test_demo_manual_gate_promote_and_smoke_test_abort() -> None:
    async with running_demo() as (demo, http):
        await eventually(lambda: _is(color(http, demo, "active"), "blue"))
        with Traffic(http, demo) as traffic:
            await api(
                http,
                demo,
                "POST",
                f"/api/v1/rollouts/{NAME}/image",
                {"container": "*", "image": "argoproj/rollouts-demo:green"},
            )
            await eventually(lambda: _is(phase(http, demo), "Paused"), explain=rollout_view(http, demo))
            assert await color(http, demo, "preview") == "green"
            assert await color(http, demo, "active") == "blue"
            await api(http, demo, "POST", f"/api/v1/rollouts/{NAME}/promote", {})
            await eventually(lambda: _is(phase(http, demo), "Healthy"), explain=rollout_view(http, demo))
            await eventually(lambda: _is(color(http, demo, "active"), "green"))
            await traffic.more("green")
        assert traffic.answers["blue"] > 0 and traffic.answers["green"] > 0
        assert traffic.failures() == {}

        async def old_scaled_down() -> bool:
            view = await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}")
            sizes = {
                rs["metadata"]["annotations"]["rollout.argoproj.io/revision"]: rs["spec"]["replicas"]
                for rs in view["replicaSets"]
            }
            return sizes == {"1": 0, "2": 2}

        await eventually(old_scaled_down, within=10)

        # The proxy's pools are the ReplicaSets: the scaled-down one is gone (and the placeholder long since),
        # the live one is labelled with its revision and image, and it names itself in x-served-by-color.
        view = await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}")
        rev2 = next(
            rs["metadata"]["name"]
            for rs in view["replicaSets"]
            if rs["metadata"]["annotations"]["rollout.argoproj.io/revision"] == "2"
        )

        async def only_rev2_served() -> bool:
            served = await api(http, demo, "GET", "/api/v1/pools")
            pools = {p["name"]: p["labels"] for p in served["pools"]}
            return pools == {rev2: {"revision": "2", "image": "argoproj/rollouts-demo:green"}}

        await eventually(only_rev2_served, within=10)
        async with http.get(url(demo, "active", "/color")) as response:
            assert response.headers["x-served-by-color"] == rev2

        # A bad image fails the pre-promotion smoke test: the rollout aborts, live traffic stays green.
        with Traffic(http, demo) as traffic:
            await api(
                http,
                demo,
                "POST",
                f"/api/v1/rollouts/{NAME}/image",
                {"container": "*", "image": "argoproj/rollouts-demo:bad-red"},
            )
            await eventually(lambda: _is(phase(http, demo), "Degraded"))
            await traffic.more("green")
        view = await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}")
        assert "pre-promotion analysis phase error/failed" in view["message"]
        assert traffic.answers["green"] > 0 and traffic.failures() == {} and traffic.answers["red"] == 0


async def test_demo_smoke_test_passes_and_auto_promotes() -> None:
    async with running_demo(autoPromotionEnabled=True) as (demo, http):
        await eventually(lambda: _is(color(http, demo, "active"), "blue"))
        with Traffic(http, demo) as traffic:
            await api(
                http,
                demo,
                "POST",
                f"/api/v1/rollouts/{NAME}/image",
                {"container": "*", "image": "argoproj/rollouts-demo:yellow"},
            )
            await eventually(lambda: _is(color(http, demo, "active"), "yellow"))
            await traffic.more("yellow")
        view = await api(http, demo, "GET", f"/api/v1/rollouts/{NAME}")
        assert view["phase"] == "Healthy"
        runs = view["analysisRuns"]
        assert [r["status"]["phase"] for r in runs] == ["Successful"]
        assert traffic.failures() == {}
        assert set(traffic.answers) == {"blue", "yellow"}


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


async def test_stopping_the_demo_counts_no_failed_request_of_its_own_traffic() -> None:
    """The dashboard's traffic generator stops before the proxy does: stopping the proxy first closes the
    listeners under the generator, which then counts the demo's own stop as failed live requests. A slow
    image keeps requests in flight, so the proxy waits its grace period for them meanwhile."""
    loaded = manifests()
    for obj in loaded.objects:
        if isinstance(obj, Rollout):
            container = obj.spec["template"]["spec"]["containers"][0]
            container.update(image="argoproj/rollouts-demo:slow-blue", env=[{"name": "LATENCY_MS", "value": "300"}])
    config = fast_config()
    demo = Demo(loaded, config)
    await demo.start()
    try:
        assert demo.dashboard is not None
        traffic = demo.dashboard.traffic
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await eventually(lambda: _is(color(http, demo, "active"), "blue"))
        traffic.start(50)
        await wait_until(lambda: traffic.totals["active.requests"] >= 20, message="20 live requests answered")
    finally:
        await demo.stop()
    assert traffic.totals["active.requests"] >= 20
    assert (traffic.totals["active.failed"], traffic.totals["preview.failed"]) == (0, 0), dict(traffic.totals)
