"""Health, ejection, retries and upstream failures: what is safe is retried, nothing else is replayed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.proxy.conftest import RawUpstream, StartProxy, StartUpstream
from tests.proxy.support import RawClient
from tests.support import wait_until


async def test_refused_endpoint_retried_then_ejected(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": ["127.0.0.1:1", await upstream("blue")]}, preview=None)
    client = RawClient(proxy.ports["active"])
    try:
        for _ in range(12):
            resp = await client.request()
            assert resp.status == 200 and resp.body == b'"blue"'
    finally:
        await client.close()
    pool = (await proxy.control.status()).pool("blue")
    assert pool is not None
    dead = [ep for ep in pool.endpoints if ep.address == "127.0.0.1:1"][0]
    assert not dead.healthy


async def test_all_refused_is_502_and_no_endpoint_is_503(start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": ["127.0.0.1:1"], "green": []})
    client = RawClient(proxy.ports["active"])
    try:
        assert (await client.request()).status == 502
    finally:
        await client.close()
    client = RawClient(proxy.ports["preview"])
    try:
        resp = await client.request()
        assert resp.status == 503 and resp.headers[b"retry-after"] == b"1"
    finally:
        await client.close()


async def test_upstream_header_timeout_is_504(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy({"blue": [await upstream("blue")]}, preview=None, timeouts={"upstream_header": "300ms"})
    client = RawClient(proxy.ports["active"])
    try:
        assert (await client.request("/slow?ms=3000")).status == 504
        assert (await client.request("/color")).status == 200  # the client connection is still good
    finally:
        await client.close()


async def test_active_health_check_fails_closed(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await start_proxy(
        pools,
        health_check={"path": "/status/500", "interval": "50ms", "timeout": "40ms", "unhealthy_threshold": 1},
    )

    async def all_ejected() -> bool:
        status = await proxy.control.status()
        return not any(ep.healthy for p in status.pools for ep in p.endpoints)

    await wait_until(all_ejected, message="every endpoint failing its health check")
    status = await proxy.control.status()
    assert not any(ep.healthy for p in status.pools for ep in p.endpoints)
    from proxy.control.api import ConflictError

    with pytest.raises(ConflictError, match="no healthy endpoint"):
        await proxy.control.switch("green")
    client = RawClient(proxy.ports["active"])
    try:
        assert (await client.request()).status == 503
    finally:
        await client.close()


async def test_reset_retries_idempotent_never_replays_post(
    upstream: StartUpstream, start_proxy: StartProxy, raw_upstream: Callable[..., RawUpstream]
) -> None:
    resetting = raw_upstream(then="reset")  # reads a request head, counts its method, resets before answering
    proxy = await start_proxy(
        {"blue": [await resetting.start(), await upstream("blue")]}, preview=None, outlier={"consecutive_failures": 50}
    )
    client = RawClient(proxy.ports["active"])
    try:
        for _ in range(4):  # round robin sends every other GET to the resetting endpoint first
            resp = await client.request("/color")
            assert resp.status == 200
        results = []
        for _ in range(4):
            results.append((await client.request("/echo", method="POST", body=b"pay")).status)
    finally:
        await client.close()
    assert "GET" in resetting.methods
    posts = resetting.methods.count("POST")
    assert posts >= 1
    assert results.count(502) == posts  # each POST the resetting endpoint saw failed, and was not replayed
    assert results.count(200) == 4 - posts
