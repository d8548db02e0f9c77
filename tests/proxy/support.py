"""Helpers for tests that run the real `bluegreen proxy` command and drive it with a raw HTTP client."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class ProxyProcess:
    """`bluegreen proxy --config FILE` as a child process, on free loopback ports."""

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
        self.proc: subprocess.Popen[str] | None = None
        self.args: list[str] = []

    def start(self, *args: str) -> ProxyProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bluegreen", "proxy", "--config", str(self.path), *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.proc.stdout.read() if self.proc.stdout else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports["admin"]), timeout=0.2):
                    pass
                with socket.create_connection(("127.0.0.1", self.ports["active"]), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("proxy did not start in time")

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return self.proc.returncode, out

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

    async def request(
        self, path: str = "/color", *, method: str = "GET", body: bytes = b"", close: bool = False
    ) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
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
    """The test upstream app in its own process, so a test can kill it mid-request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.proxy.upstream_app", name, str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("upstream did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class EtcdProcess:
    """A real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir.

    Fast election settings (the reference measured 22-107 ms to ready instead of up to a second).
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port, self.peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EtcdProcess:
        peer = f"http://127.0.0.1:{self.peer}"
        client = f"http://{self.endpoint}"
        self.proc = subprocess.Popen(
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
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
                    if b'"health":"true"' in s.recv(4096):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("etcd did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
