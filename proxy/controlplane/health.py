"""HealthChecker: active HTTP probes per pool, and the on-demand verification a flip needs.

Probes run off the hot path on the same loop with aiohttp's client. Passive ejection (consecutive
connect failures) lives in `Endpoint.connect_failed`, fed by the data plane itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp

from proxy.controlplane.events import emit
from proxy.dataplane.pool import Endpoint, Health, Pool

log = logging.getLogger("bluegreen.health")


class HealthChecker:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.on_change: Callable[[], None] | None = None  # a verdict changed (the supervisor pushes it)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True), auto_decompress=False
            )
        return self._session

    def watch(self, pool: Pool) -> None:
        """(Re)start the periodic probes of `pool` if it has a health-check path."""
        self.unwatch(pool.name)
        if pool.health_check.path:
            self._tasks[pool.name] = asyncio.get_running_loop().create_task(self._run(pool))

    def unwatch(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        for name in list(self._tasks):
            self.unwatch(name)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self, pool: Pool) -> None:
        hc = pool.health_check
        while True:
            endpoints = pool.endpoints
            if endpoints:
                results = await asyncio.gather(*(self.probe(pool, ep) for ep in endpoints))
                for ep, ok in zip(endpoints, results, strict=True):
                    self.record(pool, ep, ok)
            await asyncio.sleep(hc.interval)

    async def probe(self, pool: Pool, ep: Endpoint) -> bool:
        """One probe: the HTTP path when configured (2xx/3xx is up), else a TCP connect."""
        hc = pool.health_check
        try:
            async with asyncio.timeout(hc.timeout):
                if hc.path:
                    tls = pool.ssl
                    url = f"{'https' if tls is not None else 'http'}://{ep.address}{hc.path}"
                    name = (pool.server_name or ep.host) if tls is not None else None
                    async with self._client().get(
                        url, allow_redirects=False, ssl=tls if tls is not None else True, server_hostname=name
                    ) as resp:
                        await resp.read()
                        return resp.status < 400
                _, writer = await asyncio.open_connection(ep.host, ep.port)
                writer.close()
                return True
        except (OSError, TimeoutError, aiohttp.ClientError):
            return False

    def record(self, pool: Pool, ep: Endpoint, ok: bool) -> None:
        before = ep.checked
        self._record(pool, ep, ok)
        if ep.checked is not before:
            after = ep.checked.name.lower()
            emit(
                log,
                logging.WARNING if ep.checked is Health.UNHEALTHY else logging.INFO,
                "endpoint_health",
                f"endpoint {ep.address} of pool {pool.name}: {before.name.lower()} -> {after}",
                pool=pool.name,
                endpoint=ep.address,
                before=before.name.lower(),
                after=after,
            )
            if self.on_change is not None:
                self.on_change()

    @staticmethod
    def _record(pool: Pool, ep: Endpoint, ok: bool) -> None:
        hc = pool.health_check
        if ok:
            ep.streak = ep.streak + 1 if ep.streak > 0 else 1
            if ep.checked is not Health.HEALTHY and (ep.checked is Health.UNKNOWN or ep.streak >= hc.healthy_threshold):
                ep.set_checked(Health.HEALTHY)
        else:
            ep.streak = ep.streak - 1 if ep.streak < 0 else -1
            if ep.checked is not Health.UNHEALTHY and (
                ep.checked is Health.UNKNOWN or -ep.streak >= hc.unhealthy_threshold
            ):
                ep.set_checked(Health.UNHEALTHY)

    @staticmethod
    def healthy_now(pool: Pool) -> int | None:
        """`verify` without probing: the healthy endpoints of `pool`, None when one was never checked."""
        return None if _unchecked(pool) else _up(pool)

    async def verify(self, pool: Pool) -> int:
        """Healthy endpoints of `pool` now; endpoints never checked are probed first (a flip fails closed)."""
        unknown = _unchecked(pool)
        if unknown:
            results = await asyncio.gather(*(self.probe(pool, ep) for ep in unknown))
            for ep, ok in zip(unknown, results, strict=True):
                self.record(pool, ep, ok)
        return _up(pool)


def _unchecked(pool: Pool) -> list[Endpoint]:
    return [ep for ep in pool.endpoints if ep.up and ep.health is Health.UNKNOWN]


def _up(pool: Pool) -> int:
    return sum(1 for ep in pool.endpoints if ep.up)
