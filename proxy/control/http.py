"""The admin-API transport of the control interface (used by the CLI and a remote simulator)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from proxy.control.api import NotFoundError, ProxyStatus, Routes, error_for


class HttpControl:
    """The control interface of one application (`app`; None: the default one, on the original paths)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, app: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.app = app
        self._prefix = "/api/v1" if app is None else f"/api/v1/apps/{quote(app, safe='')}"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        async with self._session.request(method, f"{self.base_url}{path}", json=body) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = {"error": (await resp.text())[:200]}
            if resp.status >= 400:  # the admin API answers a refusal with `{"error": message}`
                message = data.get("error", resp.reason) if isinstance(data, dict) else str(data)
                raise error_for(resp.status, str(message))
            return data

    async def status(self) -> ProxyStatus:
        return ProxyStatus.from_json(await self._call("GET", f"{self._prefix}/pools"))

    async def apps(self) -> dict[str, Any]:
        """Every application of the proxy: Host names, whether it is the default one, routes."""
        data: dict[str, Any] = await self._call("GET", "/api/v1/apps")
        return data["apps"]  # type: ignore[no-any-return]

    async def fleet(self) -> dict[str, Any] | None:
        """The fleet view (members, generations, store), or None for a proxy that is not in one."""
        try:
            data: dict[str, Any] = await self._call("GET", "/api/v1/fleet")
        except NotFoundError:
            return None
        return data

    async def routes(self) -> Routes:
        return Routes.from_json(await self._call("GET", f"{self._prefix}/routes"))

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        body: dict[str, Any] = {"endpoints": list(endpoints)}
        if labels is not None:
            body["labels"] = dict(labels)
        await self._call("PUT", f"{self._prefix}/pools/{quote(pool, safe='')}", body)

    async def delete_pool(self, pool: str) -> None:
        await self._call("DELETE", f"{self._prefix}/pools/{quote(pool, safe='')}")

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        body: dict[str, Any] = {"active": active}
        if preview is not None:
            body["preview"] = preview
        if force:
            body["force"] = True
        if generation is not None:
            body["generation"] = generation
        return Routes.from_json(await self._call("POST", f"{self._prefix}/switch", body))
