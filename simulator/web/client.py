"""The client side of `bluegreen apply` and `bluegreen rollouts ...`: the simulator's HTTP API.

Outputs and exit codes mirror `kubectl argo rollouts` (spec §3.5), so its tutorials read the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from simulator.k8s.fields import parse_duration

__all__ = [
    "AdminClient",
    "ClientError",
    "apply_files",
    "delete_files",
    "get",
    "list_rollouts",
    "read_manifests",
    "rollout_action",
    "status",
]

HEALTHY, DEGRADED = "Healthy", "Degraded"


class ClientError(Exception):
    """A one-line reason for stderr; `data`: the API's whole error answer, when there was one."""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.data = data or {}


class AdminClient:
    def __init__(self, base: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base = base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, *, json_body: Any = None, text: str | None = None) -> dict[str, Any]:
        assert self._session is not None, "use `async with AdminClient(...)`"
        headers = {"Content-Type": "application/yaml"} if text is not None else {}
        try:
            async with self._session.request(
                method, self.base + path, json=json_body, data=text, headers=headers
            ) as response:
                body = await response.text()
                try:
                    data = json.loads(body) if body else {}
                except ValueError:
                    data = {"error": body.strip()[:200]}
                if response.status >= 400:
                    raise ClientError(str(data.get("error") or f"HTTP {response.status}"), dict(data))
                return dict(data)
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(f"cannot reach the admin API at {self.base}: {exc}") from None
        except TimeoutError:
            raise ClientError(f"the admin API at {self.base} did not answer in time") from None


class EventFeed:
    """The API's server-sent event stream, used as "something changed": `--watch` redraws on events
    instead of polling. A quiet stream still wakes the caller every `refresh` seconds (countdowns)."""

    def __init__(self, client: AdminClient) -> None:
        self._client = client
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> EventFeed:
        session = self._client._session
        assert session is not None
        try:
            self._response = await session.get(
                self._client.base + "/api/v1/events", timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
            )
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(f"cannot reach the admin API at {self._client.base}: {exc}") from None
        if self._response.status >= 400:
            raise ClientError(f"event stream: HTTP {self._response.status}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.close()  # an endless stream: close the connection, never pool it

    async def wait(self, refresh: float) -> None:
        """Return at the next event, or after `refresh` seconds without one."""
        assert self._response is not None
        try:
            async with asyncio.timeout(refresh):
                while True:
                    line = await self._response.content.readline()
                    if not line:
                        raise ClientError("the event stream closed (the demo stopped?)")
                    if line.startswith(b"data:"):
                        return
        except TimeoutError:
            return


def _files(path: str) -> list[Path]:
    root = Path(path)
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    if root.exists():
        return [root]
    raise ClientError(f"{path}: no such file or directory")


def read_manifests(paths: str | list[str]) -> str:
    """Files, directories (every YAML file, in name order) and `-` (stdin, once), in the order given, as one
    multi-document text: `kubectl apply -f a -f dir/ -f -`."""
    texts: list[str] = []
    for path in [paths] if isinstance(paths, str) else paths:
        if path == "-":
            texts.append(sys.stdin.read())
        else:
            texts += [f.read_text(encoding="utf-8") for f in _files(path)]
    return "\n---\n".join(texts)


async def apply_files(
    client: AdminClient, paths: str | list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    result = await client.call("POST", "/api/v1/manifests", text=read_manifests(paths))
    for notice in result.get("notices", []):
        print(f"Warning: {notice}", file=err)
    for line in result.get("results", []):
        print(line, file=out)
    return 0


async def delete_files(
    client: AdminClient, paths: str | list[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """`kubectl delete -f`: what existed is deleted and printed; what did not is an error (exit 1)."""
    try:
        result = await client.call("DELETE", "/api/v1/manifests", text=read_manifests(paths))
    except ClientError as exc:
        for line in exc.data.get("results", []):
            print(line, file=out)
        print(f"Error from server (NotFound): {exc}", file=err)
        return 1
    for line in result.get("results", []):
        print(line, file=out)
    return 0


def _ns(namespace: str) -> str:
    return f"?namespace={namespace}" if namespace != "default" else ""


async def rollout_action(
    client: AdminClient, name: str, action: str, body: dict[str, Any], out: TextIO, namespace: str = "default"
) -> int:
    result = await client.call("POST", f"/api/v1/rollouts/{name}/{action}{_ns(namespace)}", json_body=body)
    print(result.get("message", ""), file=out)
    return 0


LIST_COLUMNS = ("NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE", "AVAILABLE")


async def list_rollouts(
    client: AdminClient, *, namespace: str | None, name: str | None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """`list rollouts [-A] [--name N]`: Argo's table (STEP and SET-WEIGHT are canary columns: `-`)."""
    query = f"?namespace={namespace}" if namespace else ""
    items = (await client.call("GET", "/api/v1/rollouts" + query))["rollouts"]
    items = [i for i in items if name is None or i["name"] == name]
    if not items:
        where = f'"{namespace}" namespace' if namespace else "any namespace"
        print(f"No resources found in {where}.", file=err)
        return 0
    rows = [
        [
            i["name"],
            i["strategy"],
            i["phase"],
            "-",
            "-",
            f"{i['ready']}/{i['current']}",
            str(i["desired"]),
            str(i["updated"]),
            str(i["available"]),
        ]
        for i in items
    ]
    header = list(LIST_COLUMNS)
    if namespace is None:
        header = ["NAMESPACE", *header]
        rows = [[i["namespace"], *row] for i, row in zip(items, rows, strict=True)]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


async def get(
    client: AdminClient,
    name: str,
    *,
    output: str,
    watch: bool,
    color: bool,
    out: TextIO,
    interval: float = 1.0,
    namespace: str = "default",
) -> int:
    path = f"/api/v1/rollouts/{name}?namespace={namespace}" + ("&color=true" if color else "")
    if watch:
        async with EventFeed(client) as feed:
            return await _get(client, path, output=output, feed=feed, out=out, interval=interval)
    return await _get(client, path, output=output, feed=None, out=out, interval=interval)


async def _get(
    client: AdminClient, path: str, *, output: str, feed: EventFeed | None, out: TextIO, interval: float
) -> int:
    watch = feed is not None
    previous = None
    while True:
        data = await client.call("GET", path)
        if output == "json":
            text = json.dumps({k: data[k] for k in ("rollout", "replicaSets", "pods", "analysisRuns")}, indent=2)
        else:
            text = str(data["tree"])
        if text != previous:
            if watch and previous is not None and out.isatty():
                out.write("\x1b[H\x1b[2J")  # redraw in place, like `get --watch`
            print(text, file=out, flush=True)
            previous = text
        if feed is None:
            return 0
        await feed.wait(interval)  # redraw at the next change; `interval` refreshes countdowns


async def status(
    client: AdminClient,
    name: str,
    *,
    give_up_after: str,
    watch: bool,
    out: TextIO,
    err: TextIO,
    interval: float = 0.5,
    namespace: str = "default",
) -> int:
    """Argo's `status`: print each change; exit 0 on Healthy, 1 on Degraded or timeout. Paused waits."""
    try:
        limit = parse_duration(give_up_after) if give_up_after else 0.0
    except ValueError as exc:
        raise ClientError(f"--timeout: {exc}") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit if limit > 0 else None
    last = None
    while True:
        data = await client.call("GET", f"/api/v1/rollouts/{name}{_ns(namespace)}")
        phase, message = str(data["phase"]), str(data["message"])
        line = phase if not message or phase in (HEALTHY, DEGRADED) else f"{phase} - {message}"
        if line != last:
            print(line, file=out, flush=True)
            last = line
        if phase == HEALTHY:
            return 0
        if phase == DEGRADED:
            print(f"Error: The rollout is in a degraded state with message: {message}", file=err)
            return 1
        if not watch:
            return 0
        if deadline is not None and loop.time() >= deadline:
            print("Error: Rollout status watch exceeded timeout", file=err)
            return 1
        await asyncio.sleep(interval)
