"""The Admin API: the control plane over HTTP/JSON, plus `/metrics` and `/healthz`.

An aiohttp Application (routing, middleware) — the admin path is not the hot path. Every error is
JSON with a 4xx/5xx status; the bearer token is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from proxy.config import DEFAULT_APP
from proxy.control.api import NOT_IN_FLEET, ControlError, InvalidRequestError, ProxyControl
from proxy.controlplane.events import ACTOR, install_ring

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Controls = Callable[[str], ProxyControl]  # the control interface of one application, by name
CONTROLS: web.AppKey[Controls] = web.AppKey("controls")
MAX_BODY = 64 * 1024


class BodyTooLargeError(ControlError):
    status = 413


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_auth_middleware(token: str | None) -> Middleware:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith("/api/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return json_error(401, "missing or wrong bearer token")
        # Who asks, for the event log (one admin token for now, so its name is "token"; never its value).
        ACTOR.set({"client": request.remote, "token": "token" if expected is not None else "none"})
        try:
            return await handler(request)
        except ControlError as exc:
            return json_error(exc.status, exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return json_error(exc.status, exc.reason)
            raise

    return middleware


async def read_json(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(f"body larger than {MAX_BODY} bytes") from None
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("expected a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise InvalidRequestError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise InvalidRequestError(f"field {name!r} is required")
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidRequestError(f"field {name!r} must be of type {names}")
    return value


def make_admin_app(
    controls: Controls,
    registry: CollectorRegistry,
    *,
    token: str | None,
    serving: Callable[[], bool],
    before_metrics: Callable[[], Awaitable[None]] | None = None,
    reload: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    fleet_status: Callable[[], dict[str, Any]] | None = None,
    switch_report: Callable[[], dict[str, Any] | None] | None = None,
    apps: Callable[[], dict[str, Any]] | None = None,
) -> web.Application:
    """The admin API. Each routes/switch/pools call exists twice: under `/api/v1/` for the default application
    and under `/api/v1/apps/{app}/` for any application."""
    app = web.Application(middlewares=[make_auth_middleware(token)], client_max_size=MAX_BODY)
    app[CONTROLS] = controls
    ring = install_ring()

    def control_of(request: web.Request) -> ProxyControl:
        return controls(request.match_info.get("app", DEFAULT_APP))

    async def healthz(request: web.Request) -> web.Response:
        if serving():
            return web.json_response({"status": "serving"})
        return web.json_response({"status": "stopping"}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        if before_metrics is not None:
            await before_metrics()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_routes(request: web.Request) -> web.Response:
        return web.json_response((await control_of(request).routes()).to_json())

    async def post_switch(request: web.Request) -> web.Response:
        body = await read_json(request, {"active", "preview", "force", "generation"})
        active = _field(body, "active", str, required=True)
        preview = _field(body, "preview", str)
        force = _field(body, "force", bool) or False
        generation = _field(body, "generation", int)
        routes = await control_of(request).switch(active, preview, force=force, generation=generation)
        body = routes.to_json()
        if switch_report is not None and (report := switch_report()) is not None:
            body["fleet"] = report  # which proxies acknowledged, which dropped out (lease expired)
        return web.json_response(body)

    async def get_pools(request: web.Request) -> web.Response:
        return web.json_response((await control_of(request).status()).to_json())

    async def put_pool(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await read_json(request, {"endpoints", "labels"})
        endpoints = _field(body, "endpoints", list, required=True)
        labels = _field(body, "labels", dict)
        control = control_of(request)
        before = (await control.status()).pool(name)
        await control.set_endpoints(name, endpoints, labels)
        after = (await control.status()).pool(name)
        assert after is not None
        return web.json_response(after.to_json(), status=201 if before is None else 200)

    async def delete_pool(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await control_of(request).delete_pool(name)
        return web.json_response({"deleted": name})

    async def post_reload(request: web.Request) -> web.Response:
        if reload is None:
            raise InvalidRequestError("this proxy was not started from a config file")
        return web.json_response(await reload())

    async def get_fleet(request: web.Request) -> web.Response:
        if fleet_status is None:
            return json_error(404, NOT_IN_FLEET)
        return web.json_response(fleet_status())

    async def get_events(request: web.Request) -> web.Response:
        raw = request.query.get("limit")
        limit = None
        if raw is not None:
            if not raw.isdigit() or int(raw) < 1:
                raise InvalidRequestError("limit: expected a positive integer")
            limit = int(raw)
        return web.json_response({"events": ring.recent(limit)})

    app.router.add_get("/api/v1/events", get_events)
    app.router.add_get("/api/v1/fleet", get_fleet)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/api/v1/reload", post_reload)
    app.router.add_get("/metrics", metrics)

    async def get_apps(request: web.Request) -> web.Response:
        if apps is None:
            return web.json_response({"apps": {}})
        return web.json_response({"apps": apps()})

    app.router.add_get("/api/v1/apps", get_apps)
    for prefix in ("/api/v1", "/api/v1/apps/{app}"):
        app.router.add_get(f"{prefix}/routes", get_routes)
        app.router.add_post(f"{prefix}/switch", post_switch)
        app.router.add_get(f"{prefix}/pools", get_pools)
        app.router.add_put(f"{prefix}/pools/{{name}}", put_pool)
        app.router.add_delete(f"{prefix}/pools/{{name}}", delete_pool)
    return app
