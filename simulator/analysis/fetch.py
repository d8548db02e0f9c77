"""HTTP for the `web` analysis provider, with cluster DNS: a URL whose host is a Service reaches a pod.

`svc`, `svc.ns`, `svc.ns.svc` and `svc.ns.svc.cluster.local` resolve to a ready pod the Service
selects (round robin), as kube-proxy would. `HttpFetcher` then makes a real request; `VirtualFetcher`
answers from the pod's app function in process, so virtual-time tests need no sockets.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from simulator.k8s.objects import Pod, Service
from simulator.k8s.store import Store
from simulator.workloads.app import demo_response

__all__ = ["FetchError", "Fetcher", "HttpFetcher", "Request", "Response", "ServiceResolver", "VirtualFetcher"]

# What the simulated API server answers at kubernetes.default.svc/version (Argo's web-background example).
_API_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-bluegreen-simulator"}


class FetchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes


class Fetcher(Protocol):
    async def fetch(self, request: Request) -> Response: ...


class ServiceResolver:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._turn = itertools.count()

    def service_of(self, host: str) -> Service | None:
        parts = host.split(".")
        if len(parts) > 2 and parts[2:] not in (["svc"], ["svc", "cluster", "local"]):
            return None
        namespace = parts[1] if len(parts) > 1 else "default"
        return self._store.find(Service, parts[0], namespace)

    def pod_for(self, host: str) -> Pod:
        """A ready pod behind the Service named by `host`; FetchError if the host is no Service or has none."""
        service = self.service_of(host)
        if service is None:
            raise FetchError(f"dial tcp: lookup {host}: no such host")
        selector = service.selector
        pods = [
            p
            for p in self._store.list(Pod, service.metadata.namespace)
            if p.status.ready and p.status.address and all(p.metadata.labels.get(k) == v for k, v in selector.items())
        ]
        if not selector or not pods:
            raise FetchError(f"dial tcp {host}: connect: connection refused (Service has no ready endpoints)")
        return pods[next(self._turn) % len(pods)]


def _builtin(host: str, path: str) -> Response | None:
    if host in ("kubernetes.default.svc", "kubernetes.default", "kubernetes") and path == "/version":
        return Response(200, json.dumps(_API_VERSION).encode())
    return None


class VirtualFetcher:
    def __init__(self, resolver: ServiceResolver, rng: random.Random) -> None:
        self._resolver = resolver
        self._rng = rng

    async def fetch(self, request: Request) -> Response:
        parts = urlsplit(request.url)
        host = parts.hostname or ""
        builtin = _builtin(host, parts.path)
        if builtin is not None:
            return builtin
        pod = self._resolver.pod_for(host)
        answer = demo_response(pod.image, pod.env, parts.path or "/", pod.status.ready, self._rng)
        if answer.delay >= request.timeout_seconds:
            raise FetchError(f"Get {request.url!r}: context deadline exceeded (Client.Timeout exceeded)")
        return Response(answer.status, answer.body)


class HttpFetcher:
    def __init__(self, resolver: ServiceResolver) -> None:
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, request: Request) -> Response:
        parts = urlsplit(request.url)
        host = parts.hostname or ""
        builtin = _builtin(host, parts.path)
        if builtin is not None:
            return builtin
        url = request.url
        if self._resolver.service_of(host) is not None:
            pod = self._resolver.pod_for(host)
            url = urlunsplit(("http", pod.status.address, parts.path, parts.query, ""))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                request.method,
                url,
                headers=dict(request.headers),
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=request.timeout_seconds),
            ) as response:
                return Response(response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise FetchError(f"{request.method} {url}: {exc or type(exc).__name__}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
