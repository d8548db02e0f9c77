"""Metrics a release can be judged by: counters and latency by pool, listener and status class, a pool's
labels on its series, process metrics; the exposition checked by Prometheus' own `promtool`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import parse_config
from proxy.server import ProxyServer
from tests.proxy.conftest import StartProxy, StartUpstream, proxy_config
from tests.proxy.support import ProxyProcess, RawClient

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if v)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sample of `name` with exactly `labels` (a pool's series name its application: the default unless given)."""
    found = metrics.get((name, frozenset(labels.items())))
    if found is None and "app" not in labels:
        found = metrics.get((name, frozenset({**labels, "app": "default"}.items())))
    return found if found is not None else 0.0


async def scrape(admin: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def requests(port: int, n: int, path: str = "/color") -> None:
    client = RawClient(port)
    try:
        for _ in range(n):
            await client.request(path)
    finally:
        await client.close()


@pytest.fixture
async def labelled(upstream: StartUpstream) -> AsyncIterator[tuple[ProxyServer, str]]:
    """A proxy whose pools carry labels in its config."""
    green_up = await upstream("green")
    data = proxy_config({"blue": [await upstream("blue")], "green": [green_up]}, "blue", "green")
    data["pools"]["blue"]["labels"] = {"revision": "1", "image": "demo:blue"}
    data["pools"]["green"]["labels"] = {"revision": "2"}
    server = ProxyServer(parse_config(data, "<test>"))
    await server.start()
    try:
        yield server, green_up
    finally:
        await server.stop(grace=1.0)


async def test_counts_by_listener_and_pool_labels(labelled: tuple[ProxyServer, str]) -> None:
    proxy, green_up = labelled
    await requests(proxy.ports["active"], 3)
    await requests(proxy.ports["preview"], 2)
    metrics = samples(await scrape(proxy.ports["admin"]))
    blue = {"pool": "blue", "revision": "1", "image": "demo:blue"}
    green = {"pool": "green", "revision": "2"}
    assert value(metrics, "bluegreen_requests_total", listener="active", status_class="2xx", **blue) == 3
    assert value(metrics, "bluegreen_requests_total", listener="preview", status_class="2xx", **green) == 2
    assert value(metrics, "bluegreen_requests_total", listener="preview", status_class="2xx", **blue) == 0
    latency = "bluegreen_upstream_latency_seconds_count"
    assert value(metrics, latency, listener="active", status_class="2xx", **blue) == 3
    assert value(metrics, latency, listener="preview", status_class="2xx", **green) == 2
    assert value(metrics, "bluegreen_route", listener="active", **blue) == 1
    assert value(metrics, "process_open_fds") > 0  # process metrics are in the registry

    # Labels through the admin API: the next scrape carries them; a bad label is refused, nothing changes.
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/pools/green"
        endpoints = [green_up]
        async with session.put(url, json={"endpoints": endpoints, "labels": {"revision": "3"}}) as resp:
            assert resp.status == 200 and (await resp.json())["labels"] == {"revision": "3"}
        for bad in ({"pool": "x"}, {"9lives": "x"}, {"revision": 3}, ["revision"]):
            async with session.put(url, json={"endpoints": endpoints, "labels": bad}) as resp:
                assert resp.status == 400, bad
                assert "label" in (await resp.json())["error"]
    await requests(proxy.ports["preview"], 1)
    metrics = samples(await scrape(proxy.ports["admin"]))
    green3 = {"pool": "green", "revision": "3"}
    assert value(metrics, "bluegreen_requests_total", listener="preview", status_class="2xx", **green3) == 3


async def test_preview_503s_are_not_counted_on_the_live_listener(
    start_proxy: StartProxy, upstream: StartUpstream
) -> None:
    """The error rate of a release on the active listener excludes the preview's 503s (no preview pool)."""
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": []})
    await requests(proxy.ports["preview"], 2)
    await requests(proxy.ports["active"], 2)
    metrics = samples(await scrape(proxy.ports["admin"]))
    assert value(metrics, "bluegreen_requests_total", pool="green", listener="preview", status_class="5xx") == 2
    assert value(metrics, "bluegreen_requests_total", pool="green", listener="active", status_class="5xx") == 0
    assert value(metrics, "bluegreen_requests_total", pool="blue", listener="active", status_class="2xx") == 2


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian's prometheus package) is installed by scripts/system-deps"
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_exposition_passes_promtool_and_workers_report_their_processes(
    upstream: StartUpstream, tmp_path: Path, workers: str
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", workers)
    try:
        await requests(proxy.ports["active"], 3)
        text = await scrape(proxy.ports["admin"])
    finally:
        await proxy.stop()
    checked = await asyncio.to_thread(
        subprocess.run, [promtool(), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    metrics = samples(text)
    assert value(metrics, "bluegreen_requests_total", pool="blue", listener="active", status_class="2xx") == 3
    for index in range(int(workers)):
        assert value(metrics, "bluegreen_worker_resident_memory_bytes", worker=str(index)) > 0
        assert value(metrics, "bluegreen_worker_open_fds", worker=str(index)) > 0


def test_alert_rules_pass_promtool() -> None:
    rules = REPO / "config" / "prometheus" / "alerts.yml"
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout


async def test_grafana_dashboard_queries_name_metrics_the_proxy_exports(
    upstream: StartUpstream, start_proxy: StartProxy
) -> None:
    dashboard = json.loads((REPO / "config" / "prometheus" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    await proxy.control.switch("green")  # so the flip histogram has a sample
    exported = {s[0] for s in samples(await scrape(proxy.ports["admin"]))}
    for expr in exprs:
        for name in re.findall(r"\b(?:bluegreen|process)_[a-z_]+", expr):
            # Worker metrics exist only under --workers (checked in the promtool test).
            assert name in exported or name.startswith("bluegreen_worker_"), (name, expr)


async def test_upstream_latency_resolves_below_a_millisecond(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    """The loop's clock steps in whole milliseconds under uvloop: latency is measured with perf_counter."""
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None)
    await requests(proxy.ports["active"], 20)
    metrics = samples(await scrape(proxy.ports["admin"]))
    labels = {"pool": "blue", "listener": "active", "status_class": "2xx"}
    total = value(metrics, "bluegreen_upstream_latency_seconds_sum", **labels)
    count = value(metrics, "bluegreen_upstream_latency_seconds_count", **labels)
    assert count == 20 and total > 0
    assert abs(total * 1000 - round(total * 1000)) > 1e-6  # not a whole number of milliseconds
    assert value(metrics, "bluegreen_upstream_latency_seconds_bucket", le="5e-05", **labels) >= 0
    assert value(metrics, "bluegreen_upstream_latency_seconds_bucket", le="0.005", **labels) > 0
