"""Watch: what the control plane learns by looking, reported as events (`proxy.controlplane.events`).

The data plane never logs: it counts passive ejections (`Endpoint.ejections`) and in-flight requests, and
under `--workers` those counters come back with the workers' stats. Once a second `Watch` refreshes them
and reports what changed: endpoints ejected, and drains that finished (nothing of the pool left in flight)
or were cut at the drain timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from proxy.controlplane.events import emit
from proxy.controlplane.stats import Counters
from proxy.controlplane.switch import Switch

log = logging.getLogger("bluegreen.watch")
INTERVAL = 1.0


class Watch:
    def __init__(
        self,
        switch: Switch,
        counters: Callable[[], Iterable[Counters]],
        refresh: Callable[[], Awaitable[None]] | None = None,
        interval: float = INTERVAL,
    ) -> None:
        self.switch = switch
        self.counters = counters
        self.refresh = refresh
        self.interval = interval
        self._ejections: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.refresh is not None:
                try:
                    await self.refresh()
                except Exception as exc:  # a worker that does not answer now answers next time
                    log.debug("stats refresh failed: %s", exc)
            self.check()

    def check(self) -> None:
        for pool in list(self.switch.pools.values()):
            for ep in pool.endpoints:
                key = (pool.name, ep.address)
                seen = self._ejections.get(key, 0)
                if ep.ejections > seen:
                    emit(
                        log,
                        logging.WARNING,
                        "endpoint_ejected",
                        f"endpoint {ep.address} of pool {pool.name} ejected after consecutive connect failures",
                        pool=pool.name,
                        endpoint=ep.address,
                        ejections=ep.ejections - seen,
                    )
                self._ejections[key] = ep.ejections  # a restarted worker counts from 0 again
        draining = self.switch.draining
        if not draining:
            return
        in_flight = {c.name: c.in_flight for c in self.counters()}
        now = time.monotonic()
        timeout = self.switch.config.drain_timeout
        for name, since in list(draining.items()):
            left = in_flight.get(name, 0)
            if left == 0:
                del draining[name]
                emit(
                    log,
                    logging.INFO,
                    "drain_finished",
                    f"pool {name} drained in {now - since:.1f} s",
                    pool=name,
                    seconds=round(now - since, 3),
                )
            elif now - since > timeout + self.interval:
                del draining[name]
                emit(
                    log,
                    logging.WARNING,
                    "drain_cut",
                    f"pool {name}: drain timeout ({timeout:g} s) passed with {left} requests in flight; cut",
                    pool=name,
                    in_flight=left,
                )
