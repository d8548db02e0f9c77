"""The runtime-socket transport of the control interface (`bluegreen status|switch --admin unix:PATH`).

The socket (`admin.socket`, served by `proxy.controlplane.runtime`) flips and reads; it does not change
pools, which stay with the admin API. One connection serves every call of a client, one command line and
one JSON answer line each, in order. Its access control is the file's mode, so no token is sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.control.api import InvalidRequestError, NotFoundError, ProxyStatus, Routes, error_for

PREFIX = "unix:"
MAX_ANSWER = 16 * 1024 * 1024  # a status of many pools is one long line


def socket_path(admin: str) -> str | None:
    """The path of an `--admin unix:PATH` (also `unix://PATH`), None for an admin API's URL."""
    if not admin.startswith(PREFIX):
        return None
    path = admin[len(PREFIX) :]
    return path[2:] if path.startswith("//") else path


def _word(name: str) -> str:
    """A name as one word of a command line: what would split the line, end it or read as an option
    (`green force`, `a=b`) is refused before anything is sent."""
    if not name or "=" in name or any(c.isspace() for c in name):
        raise InvalidRequestError(f"{name!r} is not a pool or application name (no spaces, no '=')")
    return name


class RuntimeControl:
    """The control interface of one application (`app`; None: the default one) over the runtime socket."""

    def __init__(self, path: str, timeout: float = 30.0, app: str | None = None) -> None:
        self.path = path
        self.app = app
        self.timeout = timeout
        self._scope = "" if app is None else f" app={_word(app)}"
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> RuntimeControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._stream is not None:
            writer = self._stream[1]
            self._stream = None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def _call(self, command: str) -> Any:
        async with asyncio.timeout(self.timeout):
            if self._stream is None:
                self._stream = await asyncio.open_unix_connection(self.path, limit=MAX_ANSWER)
            reader, writer = self._stream
            writer.write(command.encode() + b"\n")
            line = await reader.readline()
        if not line.endswith(b"\n"):
            await self.close()
            raise ConnectionResetError(f"the runtime socket {self.path} closed without answering {command!r}")
        data = json.loads(line)
        if isinstance(data, dict) and "error" in data and "status" in data:
            raise error_for(int(data["status"]), str(data["error"]))
        return data

    async def status(self) -> ProxyStatus:
        return ProxyStatus.from_json(await self._call(f"pools{self._scope}"))

    async def routes(self) -> Routes:
        return Routes.from_json(await self._call(f"routes{self._scope}"))

    async def apps(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("apps")
        return data["apps"]  # type: ignore[no-any-return]

    async def fleet(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = await self._call("fleet")
        except NotFoundError:
            return None
        return data

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        words = ["switch", _word(active)]
        if preview is not None:
            words.append(f"preview={_word(preview)}")  # a keyword: a pool may be named `force`
        if force:
            words.append("force")
        if generation is not None:
            words.append(f"generation={generation}")
        return Routes.from_json(await self._call(" ".join(words) + self._scope))

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        raise InvalidRequestError("the runtime socket flips and reads; pools change through the admin API")

    async def delete_pool(self, pool: str) -> None:
        raise InvalidRequestError("the runtime socket flips and reads; pools change through the admin API")
