"""Pods as real loopback servers running the rollouts-demo app."""

from __future__ import annotations

import random

import aiohttp

from simulator.workloads.pods import ServerRuntime


class App:
    def __init__(self, name: str, image: str, env: dict[str, str] | None = None) -> None:
        self.name, self.image, self.env = name, image, env or {}
        self.ready = False

    def is_ready(self) -> bool:
        return self.ready


async def test_pod_server_serves_color_pod_header_and_health() -> None:
    runtime = ServerRuntime(rng=random.Random(0))
    blue = App("demo-abc-x1y2z", "argoproj/rollouts-demo:blue")
    bad = App("demo-def-q3w4e", "argoproj/rollouts-demo:bad-red", {"ERROR_RATE": "100"})
    try:
        blue_address, bad_address = await runtime.start(blue), await runtime.start(bad)
        assert blue_address.startswith("127.0.0.1:")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{blue_address}/healthz") as r:
                assert r.status == 503  # not ready yet
            blue.ready = True
            async with http.get(f"http://{blue_address}/healthz") as r:
                assert r.status == 200
            async with http.get(f"http://{blue_address}/color") as r:
                assert (r.status, await r.json(), r.headers["X-Pod"]) == (200, "blue", "demo-abc-x1y2z")
            async with http.get(f"http://{bad_address}/color") as r:
                assert (r.status, r.headers["X-Pod"]) == (500, "demo-def-q3w4e")
            await runtime.stop(blue.name)
            try:
                async with http.get(f"http://{blue_address}/color") as r:
                    raise AssertionError(f"a stopped pod answered {r.status}")
            except aiohttp.ClientConnectionError:
                pass
    finally:
        await runtime.close()
