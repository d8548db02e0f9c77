"""Where pods run: real aiohttp servers on loopback (demos, end-to-end) or nowhere (virtual-time tests).

A runtime starts a pod's app and gives back its `host:port`. `ServerRuntime` binds 127.0.0.1 on an
ephemeral port per pod. `VirtualRuntime` only hands out addresses; requests to them are answered in
process by `simulator.analysis.fetch.VirtualFetcher` from the same app function, so tests need no sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Protocol

from aiohttp import web

from simulator.workloads.app import demo_response

__all__ = ["PodApp", "PodRuntime", "ServerRuntime", "VirtualRuntime"]


class PodApp(Protocol):
    """What a runtime needs to know of a pod while it serves."""

    name: str
    image: str
    env: dict[str, str]

    def is_ready(self) -> bool: ...


class PodRuntime(Protocol):
    async def start(self, pod: PodApp) -> str:
        """Start serving; returns the address `host:port`."""
        ...

    async def stop(self, name: str) -> None: ...

    async def close(self) -> None: ...


class VirtualRuntime:
    def __init__(self) -> None:
        self._next = 0
        self.apps: dict[str, PodApp] = {}  # by address

    async def start(self, pod: PodApp) -> str:
        self._next += 1
        address = f"10.244.{self._next // 250}.{self._next % 250 + 1}:8080"
        self.apps[address] = pod
        return address

    async def stop(self, name: str) -> None:
        for address, app in list(self.apps.items()):
            if app.name == name:
                del self.apps[address]

    async def close(self) -> None:
        self.apps.clear()


class ServerRuntime:
    """One aiohttp AppRunner per pod, bound to 127.0.0.1 on a port the OS picks."""

    def __init__(self, host: str = "127.0.0.1", rng: random.Random | None = None) -> None:
        self._host = host
        self._rng = rng or random.Random()
        self._runners: dict[str, web.AppRunner] = {}

    async def start(self, pod: PodApp) -> str:
        async def handle(request: web.Request) -> web.StreamResponse:
            answer = demo_response(pod.image, pod.env, request.path, pod.is_ready(), self._rng)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return web.Response(
                status=answer.status,
                body=answer.body,
                content_type=answer.content_type,
                headers={"X-Pod": pod.name},
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, 0)
        await site.start()
        self._runners[pod.name] = runner
        port = runner.addresses[0][1]
        return f"{self._host}:{port}"

    async def stop(self, name: str) -> None:
        runner = self._runners.pop(name, None)
        if runner is not None:
            await runner.cleanup()

    async def close(self) -> None:
        for name in list(self._runners):
            with contextlib.suppress(Exception):
                await self.stop(name)
