"""The in-process transport of the control interface: calls go straight to the Switch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.config import DEFAULT_APP
from proxy.control.api import ProxyStatus, Routes
from proxy.controlplane.switch import Switch


class LocalControl:
    """The control interface of one application (`app`) of an in-process Switch."""

    def __init__(self, switch: Switch, app: str = DEFAULT_APP) -> None:
        self._switch = switch
        self.app = app

    # Reads wait for a change in progress (the Switch's lock): under a supervisor a change is in the
    # shadow state a moment before every worker has acknowledged it, and a read must not run ahead.

    async def status(self) -> ProxyStatus:
        async with self._switch.lock:
            return self._switch.status(self.app)

    async def routes(self) -> Routes:
        async with self._switch.lock:
            return self._switch.routes(self.app)

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        await self._switch.set_endpoints(pool, endpoints, labels, app=self.app)

    async def delete_pool(self, pool: str) -> None:
        await self._switch.delete_pool(pool, app=self.app)

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        return await self._switch.switch(active, preview, app=self.app, force=force, generation=generation)
