"""The `prometheus` analysis provider: Argo's query and result semantics over Prometheus' HTTP API.

A measurement is one instant query (`GET ADDRESS/api/v1/query?query=...`, as Argo's client sends it).
As in Argo's `metricproviders/prometheus`, a scalar result is a float and an instant vector is a list of
floats, one per series (`result[0] >= 0.95`); any other result type, an unreachable server, a timeout or
an error answer ends the measurement in Error. The measurement's value is written as Argo writes it:
`0.97` for a scalar, `[0.97,1]` for a vector (Go's shortest `'f'` format; `NaN`, `+Inf`).

`address` may be left out of a template; the controller's default is used then (Argo's
`ARGO_ROLLOUTS_PROMETHEUS_ADDRESS`; the demo's own Prometheus under `bluegreen demo --prometheus`).

`LocalPrometheus` runs a real Prometheus (Debian's `prometheus` package) on a loopback port, scraping
given targets every second: the demo's, and the tests'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "ADDRESS_ENV",
    "DEFAULT_TIMEOUT",
    "LocalPrometheus",
    "PrometheusClient",
    "PrometheusError",
    "QueryResult",
    "format_sample",
    "parse_response",
    "valid_address",
]

ADDRESS_ENV = "ARGO_ROLLOUTS_PROMETHEUS_ADDRESS"  # Argo's controller reads its default address from here
DEFAULT_TIMEOUT = 30.0  # seconds, when the metric sets no `timeout`


class PrometheusError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class QueryResult:
    value: float | list[float]  # what `result` is in the conditions
    text: str  # the measurement's value, as Argo writes it


def format_sample(value: float) -> str:
    """Go's `strconv.FormatFloat(v, 'f', -1, 64)`, which Prometheus' `SampleValue.String` uses."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sample(pair: object) -> float:
    """A `[timestamp, "value"]` pair of the API's JSON."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise PrometheusError(f"unexpected sample in the Prometheus answer: {pair!r}")
    try:
        return float(pair[1])
    except ValueError:
        raise PrometheusError(f"unexpected sample value in the Prometheus answer: {pair[1]!r}") from None


def parse_response(document: object) -> QueryResult:
    """The JSON of `/api/v1/query` -> `result`: a float (scalar) or a list of floats (instant vector)."""
    if not isinstance(document, dict):
        raise PrometheusError("the Prometheus answer is not a JSON object")
    if document.get("status") != "success":
        raise PrometheusError(f"{document.get('errorType') or 'error'}: {document.get('error') or 'query failed'}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("the Prometheus answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        value = _sample(result)
        return QueryResult(value, format_sample(value))
    if kind == "vector" and isinstance(result, list):
        values = [_sample(series.get("value") if isinstance(series, dict) else None) for series in result]
        return QueryResult(values, "[" + ",".join(format_sample(v) for v in values) + "]")
    raise PrometheusError("Prometheus metric type not supported")


def valid_address(address: str) -> bool:
    """Argo's check: an absolute URL with a scheme and a host."""
    parts = urlsplit(address)
    return bool(parts.scheme and parts.netloc)


class PrometheusClient:
    """Instant queries with aiohttp; `default_address` serves templates that leave `address` out."""

    def __init__(self, default_address: str | None = None) -> None:
        self.default_address = default_address
        self._session: aiohttp.ClientSession | None = None

    async def query(
        self,
        address: str,
        query: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> QueryResult:
        address = address or self.default_address or ""
        if not address:
            raise PrometheusError("prometheus address is not configured")
        if not valid_address(address):
            raise PrometheusError(f"prometheus address {address!r} is not a URL")
        url = address.rstrip("/") + "/api/v1/query"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(
                url,
                params={"query": query},
                headers=dict(headers or {}),
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise PrometheusError(f"Get {url!r}: context deadline exceeded after {timeout_seconds:g} s") from None
        except aiohttp.ClientError as exc:
            raise PrometheusError(f"Get {url!r}: {exc or type(exc).__name__}") from None
        try:
            document: Any = json.loads(body)
        except ValueError:
            raise PrometheusError(f"server returned HTTP status {status}") from None
        if not 200 <= status < 300 and not isinstance(document, dict):
            raise PrometheusError(f"server returned HTTP status {status}")
        return parse_response(document)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalPrometheus:
    """A real Prometheus on a free loopback port scraping `targets` (`host:port`, path `/metrics`) every
    `scrape_interval`; its data and config live in a temporary folder removed by `stop`."""

    STARTS = 3  # attempts, each on a fresh port (another process may take a free port before Prometheus binds it)

    def __init__(
        self,
        targets: Sequence[str],
        *,
        host: str = "127.0.0.1",
        scrape_interval: str = "1s",
        binary: str = "prometheus",
    ) -> None:
        self.targets = list(targets)
        self.host = host
        self.scrape_interval = scrape_interval
        self.binary = binary
        self.port: int | None = None
        self._dir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None

    @staticmethod
    def installed(binary: str = "prometheus") -> bool:
        return shutil.which(binary) is not None

    @property
    def address(self) -> str:
        assert self.port is not None, "not started"
        return f"http://{self.host}:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "bluegreen",
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    async def start(self, *, within: float = 30.0) -> None:
        """Start it and wait until `/-/ready` answers 200; PrometheusError with its last log lines otherwise."""
        binary = shutil.which(self.binary)
        if binary is None:
            raise PrometheusError(f"{self.binary}: not found on PATH (Debian: apt-get install prometheus)")
        folder = self._dir = Path(tempfile.mkdtemp(prefix="bluegreen-prometheus-"))
        config = folder / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")  # JSON is YAML
        error = ""
        for _ in range(self.STARTS):
            self.port = _free_port(self.host)
            log = folder / "prometheus.log"
            with log.open("wb") as out:
                self._process = await asyncio.create_subprocess_exec(
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # Ctrl-C on the demo's terminal is the demo's to handle
                )
            if await self._ready(within):
                return
            error = self._log_tail(log)
            await self._terminate()
            if "address already in use" not in error:
                break
        await self.stop()
        raise PrometheusError(f"prometheus did not become ready: {error or 'no output'}")

    async def scraped(self, *, within: float = 30.0) -> None:
        """Until every target has been scraped (Prometheus 2 applies its targets some 5 s after start)."""
        client = PrometheusClient(self.address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            while True:
                with contextlib.suppress(PrometheusError):
                    answer = await client.query("", "up == 1")
                    if isinstance(answer.value, list) and len(answer.value) >= len(self.targets):
                        return
                if loop.time() >= deadline:
                    raise PrometheusError(f"targets {self.targets} not scraped within {within:g} s")
                await asyncio.sleep(0.1)  # polling interval, bounded by the deadline
        finally:
            await client.close()

    async def _ready(self, within: float) -> bool:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while self._process.returncode is None and loop.time() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.address}/-/ready") as response:
                        if response.status == 200:
                            return True
                # The process has nothing to wait on that says "ready": poll, bounded by the deadline.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 0.1)
        return False

    @staticmethod
    def _log_tail(log: Path) -> str:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if "level=error" in line or "err=" in line]
        return (errors or lines or [""])[-1][-300:]

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        await self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
