"""The `prometheus` provider against a real Prometheus (Debian's package), and the demo's success-rate analysis.

No mocks: Prometheus scrapes a small real `/metrics` endpoint every second (the provider's semantics), or
the demo's proxy (the bundled success-rate template on pre- and post-promotion analysis under live traffic).
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from simulator.analysis.prometheus import LocalPrometheus, PrometheusClient, PrometheusError, format_sample
from simulator.analysis.spec import validate_template
from simulator.cluster import Cluster
from simulator.demo import BUNDLED_PROMETHEUS_MANIFESTS, Demo
from simulator.k8s.objects import AnalysisRun, AnalysisTemplate, ObjectMeta, Rollout
from simulator.manifests import load_path
from simulator.operations import merge_patch, promote, set_image
from tests.simulator.test_demo_e2e import fast_config
from tests.support import REPO, Process, wait_until

pytestmark = pytest.mark.slow
needs_prometheus = pytest.mark.usefixtures("prometheus_installed")


@pytest.fixture
def prometheus_installed() -> None:
    """A real Prometheus is part of these tests: scripts/system-deps installs Debian's package, never skipped."""
    assert LocalPrometheus.installed(), "prometheus is not installed (Debian: prometheus; scripts/system-deps)"


NAME = "rollout-bluegreen"
METRICS = """\
# TYPE demo_requests_total counter
demo_requests_total{code="200"} 970
demo_requests_total{code="500"} 30
# TYPE demo_value gauge
demo_value{instance_name="a"} 0.5
demo_value{instance_name="b"} 2
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scraped() -> AsyncIterator[str]:
    """A real Prometheus scraping a small real /metrics endpoint every second, once it has scraped it:
    its address. One for the module: Prometheus 2 applies its targets some 5 s after it started."""
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=METRICS, content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    prometheus = LocalPrometheus([f"127.0.0.1:{runner.addresses[0][1]}"])
    try:
        await prometheus.start()
        await prometheus.scraped(within=20)
        yield prometheus.address
    finally:
        await prometheus.stop()
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@needs_prometheus
@pytest.mark.asyncio(loop_scope="module")
async def test_provider_results_and_errors_as_argo(scraped: str) -> None:
    client = PrometheusClient()
    try:
        # An instant vector is a list of floats, one per series; a scalar is a float.
        vector = await client.query(scraped, "sort(demo_value)")
        assert (vector.value, vector.text) == ([0.5, 2.0], "[0.5,2]")
        scalar = await client.query(scraped, "scalar(sum(demo_value))")
        assert (scalar.value, scalar.text) == (2.5, "2.5")
        ratio = await client.query(
            scraped, 'sum(demo_requests_total{code!~"5.."}) / sum(demo_requests_total)', timeout_seconds=5
        )
        assert (ratio.value, ratio.text) == ([0.97], "[0.97]")
        empty = await client.query(scraped, 'demo_value{instance_name="none"}')
        assert (empty.value, empty.text) == ([], "[]")
        nan = await client.query(scraped, "scalar(demo_value) / 0")  # scalar() of two series is NaN
        assert isinstance(nan.value, float) and math.isnan(nan.value) and nan.text == "NaN"
        with pytest.raises(PrometheusError, match="Prometheus metric type not supported"):
            await client.query(scraped, "demo_value[5s]")  # a range vector
        with pytest.raises(PrometheusError, match="bad_data: .*parse error"):
            await client.query(scraped, "sum(demo_value")
        with pytest.raises(PrometheusError, match="Get 'http://127.0.0.1:"):
            await client.query(f"http://127.0.0.1:{closed_port()}", "up")
        with pytest.raises(PrometheusError, match="prometheus address is not configured"):
            await client.query("", "up")
        with pytest.raises(PrometheusError, match="is not a URL"):
            await client.query("prometheus:9090", "up")
    finally:
        await client.close()


def run(name: str, condition: str, query: str, address: str | None) -> AnalysisRun:
    provider: dict[str, Any] = {"query": query}
    if address is not None:
        provider["address"] = address
    metric = {
        "name": "m",
        "successCondition": condition,
        "consecutiveErrorLimit": 0,
        "provider": {"prometheus": provider},
    }
    return AnalysisRun(metadata=ObjectMeta(name=name), spec={"metrics": [metric]})


@needs_prometheus
@pytest.mark.asyncio(loop_scope="module")
async def test_analysis_runs_measure_with_the_prometheus_provider(scraped: str) -> None:
    """Through the AnalysisRun controller: conditions on `result`, the default address, errors."""
    query = 'sum(demo_requests_total{code!~"5.."}) / sum(demo_requests_total)'
    cluster = Cluster.virtual()
    try:
        cases = {
            "passes": run("passes", "result[0] >= 0.95", query, scraped),
            "fails": run("fails", "result[0] >= 0.99", query, scraped),
            "default-address": run("default-address", "result[0] >= 0.95", query, None),
            "no-data": run("no-data", "result[0] >= 0.95", 'demo_value{instance_name="none"}', scraped),
            "bad-query": run("bad-query", "result[0] >= 0.95", "sum(", scraped),
        }
        cluster.prometheus.default_address = scraped
        for obj in cases.values():
            cluster.store.create(obj)
        await cluster.advance(1)
        results = {}
        for name in cases:
            found = cluster.store.find(AnalysisRun, name)
            assert found is not None
            m = found.status.metric_results[0].measurements[-1]
            results[name] = (str(found.status.phase), m.value, m.message.split(":")[0])
        assert results == {
            "passes": ("Successful", "[0.97]", ""),
            "fails": ("Failed", "[0.97]", ""),
            "default-address": ("Successful", "[0.97]", ""),
            "no-data": ("Error", "", "index out of range"),
            "bad-query": ("Error", "", "bad_data"),
        }, results
    finally:
        await cluster.close()


def test_template_validation() -> None:
    def problems(prometheus: dict[str, Any]) -> list[str]:
        spec = {"metrics": [{"name": "m", "provider": {"prometheus": prometheus}}]}
        return validate_template(spec)[0]

    assert problems({"address": "http://p:9090", "query": "up", "timeout": 5}) == []
    assert problems({"query": 'up{job="{{args.job}}"}', "address": "{{args.address}}"}) == []
    assert problems({"address": "p:9090"}) == [
        "spec.metrics[0].provider.prometheus.query: is required",
        "spec.metrics[0].provider.prometheus.address: expected a URL (http://HOST:PORT), got 'p:9090'",
    ]
    assert problems({"query": "up", "timeout": "10s"}) == [
        "spec.metrics[0].provider.prometheus.timeout: expected an integer, got '10s'"
    ]
    notices = validate_template(
        {"metrics": [{"name": "m", "provider": {"prometheus": {"query": "up", "authentication": {"sigv4": {}}}}}]}
    )[1]
    assert notices == [
        "spec.metrics[0].provider.prometheus.authentication is not implemented by the simulator; ignored"
    ]


def test_format_sample_is_gos_shortest() -> None:
    assert [format_sample(v) for v in (1.0, 0.97, 1e-7, 1.5e20, -0.0, float("inf"), -math.inf)] == [
        "1",
        "0.97",
        "0.0000001",
        "150000000000000000000",
        "0",
        "+Inf",
        "-Inf",
    ]


# --- the demo: Argo's success-rate template on the proxy's metrics ---------------------------------


def prometheus_manifests(**blue_green: Any) -> Any:
    """The bundled --prometheus manifests with short analysis times, and bad- images failing every request."""
    loaded = load_path(BUNDLED_PROMETHEUS_MANIFESTS)
    for obj in loaded.objects:
        if isinstance(obj, Rollout):
            obj.spec = merge_patch(obj.spec, {"strategy": {"blueGreen": {"scaleDownDelaySeconds": 2, **blue_green}}})
            obj.spec["template"]["spec"]["containers"][0]["env"] = [{"name": "ERROR_RATE", "value": "100"}]
        if isinstance(obj, AnalysisTemplate):
            obj.spec["metrics"][0].update(initialDelay="2s", interval="1s", count=2)
    return loaded


@contextlib.asynccontextmanager
async def prometheus_demo(**blue_green: Any) -> AsyncIterator[Demo]:
    config = fast_config(prometheus=True)
    demo = Demo(prometheus_manifests(**blue_green), config)
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


def runs(demo: Demo) -> dict[str, tuple[str, list[str]]]:
    """Each AnalysisRun: its phase and its measurements' values."""
    assert demo.cluster is not None
    return {
        r.name: (str(r.status.phase), [m.value for m in r.status.metric_results[0].measurements])
        for r in demo.cluster.store.list(AnalysisRun)
        if r.status.metric_results
    }


def status(demo: Demo) -> tuple[str, str]:
    assert demo.cluster is not None
    rollout = demo.cluster.store.find(Rollout, NAME)
    if rollout is None or rollout.status is None:
        return "", ""
    return str(rollout.status.phase), rollout.status.message


async def until(demo: Demo, check: Any, what: str, within: float = 20) -> None:
    await wait_until(check, within, 0.1, message=lambda: f"{what} (rollout {status(demo)}, runs {runs(demo)})")


def current_hash(demo: Demo) -> str:
    assert demo.cluster is not None
    rollout = demo.cluster.store.find(Rollout, NAME)
    assert rollout is not None and rollout.status is not None
    return rollout.status.current_pod_hash


def query_of(demo: Demo, run_name: str) -> str:
    assert demo.cluster is not None
    run = demo.cluster.store.find(AnalysisRun, run_name)
    assert run is not None
    return str(run.spec["metrics"][0]["provider"]["prometheus"]["query"])


async def colors(demo: Demo, listener: str, n: int = 5) -> set[str]:
    port = demo.ports[listener]
    seen = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for _ in range(n):
            async with http.get(f"http://127.0.0.1:{port}/color") as response:
                seen.add(await response.text() if response.status == 200 else f"HTTP {response.status}")
    return seen


@needs_prometheus
async def test_demo_success_rate_passes_good_and_aborts_bad_before_promotion() -> None:
    """Pre-promotion on the preview's traffic of the new revision, post-promotion on the live one's."""
    async with prometheus_demo() as demo:
        assert demo.cluster is not None and demo.dashboard is not None and demo.dashboard.traffic.on
        await until(demo, lambda: status(demo)[0] == "Healthy", "the first revision Healthy")
        assert demo.prometheus is not None
        await demo.prometheus.scraped()
        set_image(demo.cluster.store, NAME, "*", "argoproj/rollouts-demo:green")
        await until(demo, lambda: status(demo)[0] == "Paused", "green passed pre-promotion analysis")
        pre = next(name for name in runs(demo) if name.endswith("-2-pre"))
        assert runs(demo)[pre] == ("Successful", ["[1]", "[1]"])
        green = current_hash(demo)
        assert f'listener="preview", pool="{NAME}-{green}"' in query_of(demo, pre)
        promote(demo.cluster.store, NAME)
        await until(demo, lambda: status(demo)[0] == "Healthy" and len(runs(demo)) == 2, "green promoted")
        post = next(name for name in runs(demo) if name.endswith("-2-post"))
        await until(demo, lambda: runs(demo)[post][0] == "Successful", "post-promotion Successful")
        assert f'listener="active", pool="{NAME}-{green}"' in query_of(demo, post)
        assert await colors(demo, "active") == {'"green"'}

        set_image(demo.cluster.store, NAME, "*", "argoproj/rollouts-demo:bad-red")
        await until(demo, lambda: status(demo)[0] == "Degraded", "bad-red aborted by pre-promotion analysis")
        bad = next(name for name in runs(demo) if name.endswith("-3-pre"))
        assert runs(demo)[bad] == ("Failed", ["[0]"])  # the live listener's 100 % of green is not counted
        assert await colors(demo, "active") == {'"green"'}


@needs_prometheus
async def test_demo_success_rate_aborts_bad_after_promotion() -> None:
    """Without a pre-promotion gate, bad-red goes live; the post-promotion analysis aborts it: back to blue."""
    async with prometheus_demo(autoPromotionEnabled=True, prePromotionAnalysis=None) as demo:
        assert demo.cluster is not None
        await until(demo, lambda: status(demo)[0] == "Healthy", "the first revision Healthy")
        assert demo.prometheus is not None
        await demo.prometheus.scraped()
        set_image(demo.cluster.store, NAME, "*", "argoproj/rollouts-demo:bad-red")
        await until(demo, lambda: status(demo)[0] == "Degraded", "bad-red aborted by post-promotion analysis")
        post = next(name for name in runs(demo) if name.endswith("-2-post"))
        assert runs(demo)[post] == ("Failed", ["[0]"])
        assert await colors(demo, "active") == {'"blue"'}


@needs_prometheus
async def test_bluegreen_demo_prometheus_command() -> None:
    """The real command: the banner names the Prometheus it started, scraping the admin port; Ctrl-C stops
    Prometheus too and removes its folder."""
    argv = [sys.executable, "-m", "bluegreen", "demo", "--prometheus"]
    argv += ["--active-port", "0", "--preview-port", "0", "--admin-port", "0", "--kube-port", "0"]
    demo = await Process.start(argv, name="bluegreen demo --prometheus")
    try:
        banner = await wait_until(
            lambda: re.search(r"Prometheus +(http://127\.0\.0\.1:\d+) ", demo.output),
            within=30,
            message=lambda: f"the banner's Prometheus line in {demo.output[-2000:]!r}",
        )
        assert banner is not None
        address = banner.group(1)
        admin = re.search(r"admin API +http://127\.0\.0\.1:(\d+)/", demo.output)
        assert admin is not None and "traffic          on:" in demo.output
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"{address}/api/v1/status/config") as response:
                config = (await response.json())["data"]["yaml"]
            async with http.get(f"{address}/api/v1/status/flags") as response:
                folder = Path((await response.json())["data"]["storage.tsdb.path"]).parent
        assert f"127.0.0.1:{admin.group(1)}" in config and "scrape_interval: 1s" in config
        assert folder.name.startswith("bluegreen-prometheus-") and folder.is_dir()
    finally:
        code, output = await demo.stop(sig=signal.SIGINT)
    assert code == 0, output
    assert not folder.exists()
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            await http.get(f"{address}/-/ready")


def test_demo_prometheus_not_installed_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bluegreen", "demo", "--prometheus", "--admin-port", "0"],
        cwd=REPO,
        env={"PATH": "/nonexistent", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "bluegreen: --prometheus needs prometheus on PATH (Debian: apt-get install prometheus)\n"
