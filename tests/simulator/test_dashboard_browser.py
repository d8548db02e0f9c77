"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright for Python).

The demo runs on free ports with the dashboard on its admin app, exactly as `bluegreen demo` composes
it. The page must draw the pods and Services, generate traffic, set image yellow and promote from its
buttons, and show the flip live: the preview Service and strip go yellow first, then the active Service
and the users' strip, with no failed request in between. Pools are named after ReplicaSets, with their
revision and image; every color is the one the pods answer (yellow, not a "green slot"). The page fits a
1280×720 projector. It takes a 1280×720 screenshot: into the test's temporary folder, or, with
`BLUEGREEN_SCREENSHOT=1`, over `docs/img/dashboard.png` (the README's picture), so a test run leaves the
work tree as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright

import simulator.demo as demo_module
from proxy.server import ProxyServer
from simulator.demo import BUNDLED_MANIFESTS, Demo, DemoConfig
from simulator.k8s.objects import AnalysisTemplate, Rollout
from simulator.manifests import Loaded, load_path
from simulator.operations import merge_patch
from simulator.web.api import CLUSTER
from simulator.web.dashboard import setup_dashboard
from simulator.workloads.kubelet import PodTiming
from tests.support import wait_until
from tests.support.chromium import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.slow

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
NAME = "rollout-bluegreen"
WAIT_MS = 15_000
VIEWPORT = (1280, 720)  # a projector
POD_NAME = re.compile(rf"^{NAME}-[a-z0-9]+-[a-z0-9]{{5}}$")


def manifests() -> Loaded:
    """The bundled demo with a quick smoke test (3 x 200 ms); the old color stays 30 s as in the demo."""
    loaded = load_path(BUNDLED_MANIFESTS)
    for obj in loaded.objects:
        if isinstance(obj, Rollout):
            obj.spec = merge_patch(obj.spec, {"strategy": {"blueGreen": {"scaleDownDelaySeconds": 30}}})
        if isinstance(obj, AnalysisTemplate):
            obj.spec["metrics"][0].update(count=3, interval="200ms")
    return loaded


class DashboardProxyServer(ProxyServer):
    """The demo's `ProxyServer` whose admin app also gets the dashboard, as the one-line hook in `Demo.start` does.

    `setup_dashboard` is idempotent, so this stays correct once demo.py wires the dashboard itself.
    """

    def __init__(self, config: Any, *, admin_setup: Any = None) -> None:
        def setup(app: web.Application) -> None:
            if admin_setup is not None:
                admin_setup(app)
            setup_dashboard(app, app[CLUSTER], lambda: self.ports)

        super().__init__(config, admin_setup=setup)


@contextlib.asynccontextmanager
async def running_demo(monkeypatch: pytest.MonkeyPatch, token: str | None = None) -> AsyncIterator[Demo]:
    monkeypatch.setattr(demo_module, "ProxyServer", DashboardProxyServer)
    config = DemoConfig(
        active_port=0,
        preview_port=0,
        admin_port=0,
        token=token,
        timing=PodTiming(startup=0.2, termination_grace=1.0),
        health_interval="200ms",
    )
    running = Demo(manifests(), config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def demo(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Demo]:
    async with running_demo(monkeypatch) as running:
        yield running


@contextlib.asynccontextmanager
async def browser_page(executable: str) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            await browser.close()


async def strip(page: Page, listener: str) -> list[str]:
    """The colors of the strip, oldest first; a failed request is `error`."""
    cells: list[str] = await page.eval_on_selector_all(
        f"#strip-{listener} .cell",
        "cells => cells.map(c => c.classList.contains('err') ? 'error' : c.dataset.color)",
    )
    return [c for c in cells if c]


async def test_dashboard_draws_the_rollout_and_shows_a_flip_live(demo: Demo, tmp_path: Path) -> None:
    errors: list[str] = []
    executable = chromium()
    screenshot = README_SCREENSHOT if os.environ.get("BLUEGREEN_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    async with browser_page(executable) as page:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"http://127.0.0.1:{demo.ports['admin']}/")

        # The initial state of the guide: both Services on revision 1 (blue pods), two pods drawn, arrows to both.
        await page.wait_for_selector("#connection[data-state=open]")
        await page.wait_for_selector("#svc-active[data-color=blue][data-revision='1']")
        await page.wait_for_selector("#svc-preview[data-color=blue][data-revision='1']")
        await page.wait_for_function("document.querySelectorAll('.pod[data-color=blue][data-ready=true]').length === 2")
        pods = await page.eval_on_selector_all(".pod", "nodes => nodes.map(n => n.dataset.pod)")
        assert len(pods) == 2 and all(POD_NAME.match(p) for p in pods), pods
        assert await page.text_content("#svc-active .svc-name") == f"{NAME}-active"
        assert await page.text_content("#svc-preview .svc-name") == f"{NAME}-preview"
        await page.wait_for_function("document.querySelectorAll('path.arrow[data-service=active]').length === 2")
        rev1 = pods[0].rsplit("-", 1)[0]  # the pool is the ReplicaSet: rollout-bluegreen-<hash>
        await page.wait_for_function(f"document.querySelector('#route-active').textContent === '{rev1}'")
        assert await page.text_content("#route-active-what") == "revision 1 · rollouts-demo:blue"
        assert await page.get_attribute("#listener-active", "data-color") == "blue"

        # Generate traffic: the users' strip fills with blue.
        await page.click("#traffic-toggle")
        await page.wait_for_selector("#strip-active[data-last=blue]")
        await page.wait_for_function("document.querySelectorAll('#strip-active .cell[data-color=blue]').length >= 5")
        assert "last 10s" in (await page.text_content("#rps-active") or "")
        assert await page.text_content("#errors-window") == "errors, last 10s"

        # Deploy yellow: the preview Service and the testers' strip go yellow, users stay on blue.
        await page.select_option("#image-select", "argoproj/rollouts-demo:yellow")
        await page.click("#btn-set-image")
        await page.wait_for_selector("#phase[data-phase=Paused]")  # after the smoke test passed
        await page.wait_for_selector("#svc-preview[data-color=yellow][data-revision='2']")
        await page.wait_for_selector("#strip-preview[data-last=yellow]")
        await page.wait_for_selector("#listener-preview[data-color=yellow]")
        assert await page.text_content("#route-preview-what") == "revision 2 · rollouts-demo:yellow"
        assert await page.get_attribute("#svc-active", "data-color") == "blue"
        assert await page.get_attribute("#strip-active", "data-last") == "blue"
        assert await page.eval_on_selector_all(".pod[data-color=green]", "nodes => nodes.length") == 0
        await page.wait_for_selector(".run .run-phase[data-phase=Successful]")
        assert "BlueGreenPause" in (await page.text_content("#fact-pause") or "")
        assert await page.is_hidden("#why-preview")  # it serves: nothing to explain

        # Promote: the active Service flips to yellow; the users' strip changes color with no error.
        await page.click("#btn-promote")
        await page.wait_for_selector("#svc-active[data-color=yellow]")
        await page.wait_for_selector("#phase[data-phase=Healthy]")
        await page.wait_for_selector("#strip-active[data-last=yellow]")
        await page.wait_for_function("document.querySelectorAll('#strip-active .cell[data-color=yellow]').length >= 10")
        assert await page.text_content("#route-active-what") == "revision 2 · rollouts-demo:yellow"
        assert "scales down in" in (await page.text_content(".rs .tag.countdown") or "")
        assert "rollouts-demo:blue" in (await page.text_content("#fact-scaledown") or "")
        colors = await strip(page, "active")
        first = colors.index("yellow")
        assert set(colors[:first]) == {"blue"} and set(colors[first:]) == {"yellow"}, colors
        await page.wait_for_selector("body[data-arrows=still]")
        # Failures since the start per listener, never summed: the preview's 503s while yellow's pods started
        # are not live requests lost in the flip.
        assert "failed since the start: active 0/" in (await page.text_content("#traffic-totals") or "")

        await page.screenshot(path=str(screenshot))  # the projector's 1280×720
        # A projector: nothing wider than 1280 px, and the diagram and the traffic above the fold.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORT[0], width
        for panel in ("#diagram-panel", "#traffic-panel", "#controls-panel"):
            box = await page.eval_on_selector(panel, "n => n.getBoundingClientRect().toJSON()")
            assert box["right"] <= VIEWPORT[0] and box["bottom"] <= VIEWPORT[1], (panel, box)

    # The server saw the same: live traffic reached both colors and not one request failed (read once more
    # than 30 live requests were counted: on a loaded machine the generator may not have sent that many yet).
    async def traffic_now() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{demo.ports['admin']}/api/v1/traffic") as response,
        ):
            body: dict[str, Any] = await response.json()
            return body

    async def enough() -> dict[str, Any] | None:
        counted = await traffic_now()
        return counted if counted["listeners"]["active"]["requests"] > 30 else None

    traffic = await wait_until(enough, 20, message="more than 30 live requests counted")
    counts = {
        role: {k: v for k, v in listener.items() if k != "strip"} for role, listener in traffic["listeners"].items()
    }
    active = counts["active"]
    assert active["failed"] == 0 and active["requests"] > 30, counts
    assert errors == []


async def test_traffic_api_validates_and_stops_cleanly(demo: Demo) -> None:
    base = f"http://127.0.0.1:{demo.ports['admin']}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for bad in ({}, {"on": "yes"}, {"on": True, "rate": 0}, {"on": True, "rate": 1000}, {"on": True, "rate": True}):
            async with http.post(f"{base}/api/v1/traffic", json=bad) as response:
                assert response.status == 400, bad
                assert "error" in await response.json()
        async with http.post(f"{base}/api/v1/traffic", data=b"not json") as response:
            assert response.status == 400
        async with http.post(f"{base}/api/v1/traffic", json={"on": True, "rate": 5}) as response:
            body = await response.json()
            assert response.status == 200 and body["on"] is True and body["rate"] == 5
        async with http.get(f"{base}/api/v1/dashboard/state") as response:
            state = await response.json()
        assert state["rollout"]["name"] == NAME
        assert {s["role"] for s in state["rollout"]["services"]} == {"active", "preview"}
        assert set(state["listeners"]) == {"active", "preview"}
        async with http.get(f"{base}/static/app.js") as response:
            assert response.status == 200 and "EventSource" in await response.text()
        async with http.post(f"{base}/api/v1/traffic", json={"on": False}) as response:
            assert (await response.json())["on"] is False
        # The fixture stops the demo with the generator switched on again: shutdown ends it.
        async with http.post(f"{base}/api/v1/traffic", json={"on": True}) as response:
            assert (await response.json())["on"] is True


async def test_dashboard_asks_for_the_admin_token_and_streams_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """With BLUEGREEN_ADMIN_TOKEN set, `/api/v1` needs the bearer token: the page asks for it, then
    reads the same event stream through fetch (EventSource cannot send headers) and acts with it."""
    executable = chromium()
    async with running_demo(monkeypatch, token="s3cret") as demo, browser_page(executable) as page:
        await page.goto(f"http://127.0.0.1:{demo.ports['admin']}/")
        await page.wait_for_selector("#token-row:not([hidden])")
        await page.wait_for_selector("#connection[data-state=error]")
        await page.fill("#token", "s3cret")
        await page.click("#btn-token")
        await page.wait_for_selector("#connection[data-state=open]")
        await page.wait_for_function("document.querySelectorAll('.pod[data-ready=true]').length === 2")
        await page.click("#traffic-toggle")
        await page.wait_for_selector("#strip-active[data-last=blue]")
