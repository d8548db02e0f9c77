"""The Admin API contract: every call and every status code, over real HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from proxy.control.api import ConflictError, NotFoundError
from proxy.control.http import HttpControl
from tests.proxy.conftest import StartProxy, StartUpstream


async def call(
    port: int, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with session.request(method, f"http://127.0.0.1:{port}{path}", **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


@pytest.fixture
async def admin(upstream: StartUpstream, start_proxy: StartProxy) -> int:
    proxy = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    return proxy.ports["admin"]


async def test_routes_and_switch(admin: int) -> None:
    assert await call(admin, "GET", "/api/v1/routes") == (200, {"active": "blue", "preview": "green", "generation": 1})
    status, body = await call(admin, "POST", "/api/v1/switch", {"active": "green"})
    assert (status, body) == (200, {"active": "green", "preview": "blue", "generation": 2})
    # The same routes again change nothing (idempotent).
    assert await call(admin, "POST", "/api/v1/switch", {"active": "green"}) == (200, body)
    status, body = await call(admin, "POST", "/api/v1/switch", {"active": "blue", "generation": 2})
    assert status == 200 and body["generation"] == 3


async def test_switch_conflicts_and_errors(admin: int) -> None:
    status, body = await call(admin, "POST", "/api/v1/switch", {"active": "green", "generation": 7})
    assert status == 409 and "generation 7" in body["error"]
    assert (await call(admin, "POST", "/api/v1/switch", {"active": "purple"}))[0] == 404
    # A pool whose only endpoint refuses connections has no healthy endpoint: 409 unless forced.
    assert (await call(admin, "PUT", "/api/v1/pools/dead", {"endpoints": ["127.0.0.1:1"]}))[0] == 201
    status, body = await call(admin, "POST", "/api/v1/switch", {"active": "dead"})
    assert status == 409 and "no healthy endpoint" in body["error"]
    assert (await call(admin, "PUT", "/api/v1/pools/empty", {"endpoints": []}))[0] == 201
    assert (await call(admin, "POST", "/api/v1/switch", {"active": "empty"}))[0] == 409
    status, body = await call(admin, "POST", "/api/v1/switch", {"active": "dead", "force": True})
    assert status == 200 and body["active"] == "dead" and body["preview"] == "blue"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"{}", "'active' is required"),
        (b'{"active": 3}', "'active' must be of type str"),
        (b'{"active": "green", "force": "yes"}', "'force' must be of type bool"),
        (b'{"active": "green", "generation": true}', "'generation' must be of type int"),
        (b'{"active": "green", "colour": "x"}', "unknown field(s): colour"),
    ],
)
async def test_switch_bad_input_is_400_json(admin: int, raw: bytes, message: str) -> None:
    status, body = await call(admin, "POST", "/api/v1/switch", raw=raw)
    assert status == 400 and message in body["error"]


async def test_pools_crud(admin: int, upstream: StartUpstream) -> None:
    status, body = await call(admin, "GET", "/api/v1/pools")
    assert status == 200
    pools = {p["name"]: p for p in body["pools"]}
    assert pools["blue"]["routes"] == ["active"] and pools["green"]["routes"] == ["preview"]
    assert pools["blue"]["endpoints"][0]["healthy"] is True and pools["blue"]["in_flight"] == 0
    yellow = await upstream("yellow")
    status, body = await call(admin, "PUT", "/api/v1/pools/yellow", {"endpoints": [yellow]})
    assert status == 201 and body["endpoints"][0]["address"] == yellow
    assert (await call(admin, "PUT", "/api/v1/pools/yellow", {"endpoints": [yellow]}))[0] == 200
    assert (await call(admin, "PUT", "/api/v1/pools/yellow", {"endpoints": ["nope"]}))[0] == 400
    assert (await call(admin, "PUT", "/api/v1/pools/yellow", {"endpoints": [yellow, yellow]}))[0] == 400
    assert (await call(admin, "PUT", "/api/v1/pools/yellow", {"hosts": []}))[0] == 400
    status, body = await call(admin, "DELETE", "/api/v1/pools/blue")
    assert status == 409 and "named by a route" in body["error"]
    assert (await call(admin, "DELETE", "/api/v1/pools/nope"))[0] == 404
    assert await call(admin, "DELETE", "/api/v1/pools/yellow") == (200, {"deleted": "yellow"})
    assert (await call(admin, "DELETE", "/api/v1/pools/yellow"))[0] == 404


async def test_healthz_metrics_and_unknown_paths(admin: int) -> None:
    assert (await call(admin, "GET", "/healthz"))[0] == 200
    status, text = await call(admin, "GET", "/metrics")
    assert status == 200
    assert 'bluegreen_route{app="default",listener="active",pool="blue"} 1.0' in text
    assert 'bluegreen_route_generation{app="default"} 1.0' in text
    status, body = await call(admin, "GET", "/api/v1/nothing")
    assert status == 404 and "error" in body
    status, body = await call(admin, "DELETE", "/api/v1/routes")
    assert status == 405 and "error" in body


async def test_token_required_on_api_only(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    proxy = await start_proxy(
        {"blue": [await upstream("blue")]},
        preview=None,
        admin={"host": "127.0.0.1", "port": 0, "token": "s3cret"},
    )
    port = proxy.ports["admin"]
    status, body = await call(port, "GET", "/api/v1/routes")
    assert status == 401 and "token" in body["error"] and "s3cret" not in body["error"]
    assert (await call(port, "GET", "/api/v1/routes", token="wrong"))[0] == 401
    assert (await call(port, "GET", "/api/v1/routes", token="s3cret"))[0] == 200
    assert (await call(port, "GET", "/healthz"))[0] == 200
    assert (await call(port, "GET", "/metrics"))[0] == 200


async def test_http_control_transport(admin: int) -> None:
    async with HttpControl(f"http://127.0.0.1:{admin}") as control:
        routes = await control.switch("green")
        assert routes.active == "green" and routes.generation == 2
        status = await control.status()
        assert status.pool("green") is not None and status.routes == routes
        with pytest.raises(NotFoundError):
            await control.switch("nope")
        with pytest.raises(ConflictError):
            await control.delete_pool("green")
