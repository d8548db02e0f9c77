"""Helpers for tests that run the real `bluegreen proxy` command and drive it with a raw HTTP client."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO, Process, child_pids, free_port, wait_until

__all__ = [
    "REPO",
    "EtcdProcess",
    "ProxyProcess",
    "RawClient",
    "Response",
    "UpstreamProcess",
    "child_pids",
    "keep_requesting",
]


class ProxyProcess:
    """`bluegreen proxy --config FILE` as a child process, on free loopback ports: `await proxy.start()`,
    `code, output = await proxy.stop()`."""

    def __init__(self, tmp: Path, pools: dict[str, list[str]], active: str, preview: str | None, **extra: Any) -> None:
        self.ports = {"active": free_port(), "preview": free_port(), "admin": free_port()}
        config: dict[str, Any] = {
            "listeners": {
                "active": {"host": "127.0.0.1", "port": self.ports["active"]},
                "preview": {"host": "127.0.0.1", "port": self.ports["preview"]},
            },
            "admin": {"host": "127.0.0.1", "port": self.ports["admin"]},
            "pools": {name: {"endpoints": eps} for name, eps in pools.items()},
            "routes": {"active": active, "preview": preview},
        }
        config.update(extra)
        self.path = tmp / "proxy.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.process: Process | None = None

    @property
    def proc(self) -> Process | None:
        return self.process

    async def start(self, *args: str) -> ProxyProcess:
        self.process = await Process.start(
            [sys.executable, "-m", "bluegreen", "proxy", "--config", str(self.path), *args], name="bluegreen proxy"
        )
        await self.process.wait_listening(self.ports["admin"], self.ports["active"])
        return self

    async def stop(self, grace: float = 15) -> tuple[int, str]:
        """SIGTERM (SIGKILL after `grace` s); the exit status and everything it printed."""
        assert self.process is not None
        return await self.process.stop(grace)

    def url(self, role: str = "active") -> str:
        return f"http://127.0.0.1:{self.ports[role]}"


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class RawClient:
    """A minimal HTTP/1.1 client: one connection, no hidden retries (unlike aiohttp's reused-connection retry)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.sent = 0  # requests written so far: a test can wait until one is on the wire
        self.on_connection = 0  # requests written on the current connection (1: its first)
        self.answered_at: float | None = None  # loop time of the current connection's last answer

    async def request(
        self, path: str = "/color", *, method: str = "GET", body: bytes = b"", close: bool = False
    ) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.on_connection, self.answered_at = 0, None
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        self.sent += 1
        self.on_connection += 1
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        if b"content-length" in headers:
            data = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        else:
            data = await self.reader.read()
        self.answered_at = asyncio.get_running_loop().time()
        if close or headers.get(b"connection") == b"close":
            await self.close()
        return Response(status, headers, data)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = self.reader = None


async def keep_requesting(port: int, stop: float, failures: list[str], colors: list[str]) -> None:
    """One keep-alive client requesting until `stop` (monotonic): failures and served colors are recorded."""
    client = RawClient(port)
    try:
        while time.monotonic() < stop:
            try:
                resp = await client.request()
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(repr(exc))
                await client.close()
                continue
            if resp.status != 200:
                failures.append(f"status {resp.status}")
            colors.append(resp.headers[b"x-served-by-color"].decode())
    finally:
        await client.close()


class UpstreamProcess:
    """The test upstream app in its own process, so a test can kill it mid-request:
    `up = await UpstreamProcess.start("blue")`, then `await up.kill()`."""

    def __init__(self, name: str, process: Process, port: int) -> None:
        self.name, self.process, self.port = name, process, port
        self.address = f"127.0.0.1:{port}"

    @classmethod
    async def start(cls, name: str) -> UpstreamProcess:
        port = free_port()
        process = await Process.start(
            [sys.executable, "-m", "tests.proxy.upstream_app", name, str(port)], name=f"upstream {name}", output=False
        )
        await process.wait_listening(port)
        return cls(name, process, port)

    async def kill(self) -> None:
        await self.process.kill()


class EtcdProcess:
    """A real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir:
    `await etcd.start()` (again after `await etcd.kill()`: same ports, same data).

    Fast election settings (the reference measured 22-107 ms to ready instead of up to a second).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port, self.peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.process: Process | None = None

    async def start(self) -> EtcdProcess:
        peer = f"http://127.0.0.1:{self.peer}"
        client = f"http://{self.endpoint}"
        self.process = await Process.start(
            [
                "etcd",
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--heartbeat-interval=10",
                "--election-timeout=100",
                "--log-level=error",
            ],
            output=False,
        )
        await wait_until(self._healthy, 20, message="etcd healthy", ignore=(OSError, asyncio.IncompleteReadError))
        return self

    async def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise RuntimeError(f"etcd exited with {self.process.returncode}")
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            return b'"health":"true"' in await reader.read()
        finally:
            writer.close()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.process.kill()
