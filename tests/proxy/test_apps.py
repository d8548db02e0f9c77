"""Several applications on one proxy, chosen by Host (issue 14, item 2): config, routing, the admin API per
application, metrics and access log with the `app` label, TLS server names (421), the CLI's `--app`, and
flips of one application under load that the other's traffic never sees (1 and 2 workers)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from proxy.config import ConfigError, parse_config
from proxy.server import ProxyServer
from tests.proxy.conftest import StartProxy, StartUpstream, parse_responses, proxy_config, raw_request
from tests.proxy.support import EtcdProcess, ProxyProcess
from tests.proxy.test_upgrade import started, upgrade
from tests.support import wait_until
from tests.support.certs import CertAuthority

SHOP = {"hosts": ["shop.example.com", "*.shop.example.com"]}


async def shop_and_default(start_proxy: StartProxy, upstream: StartUpstream, **extra: Any) -> ProxyServer:
    """The default application (blue/green) and `shop` (its own blue/green, other upstreams)."""
    apps = {
        "shop": {
            **SHOP,
            "pools": {
                "blue": {"endpoints": [await upstream("shop-blue")]},
                "green": {"endpoints": [await upstream("shop-green")]},
            },
            "routes": {"active": "blue", "preview": "green"},
        }
    }
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    return await start_proxy(pools, apps=apps, **extra)


async def get(
    port: int, host: str, path: str = "/color", *, target: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = f"GET {target or path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    (response,) = parse_responses(await raw_request(port, request))
    return response


def upstream_of(response: tuple[int, dict[str, str], bytes]) -> str:
    status, headers, _ = response
    assert status == 200, response
    return headers["x-upstream"]


async def admin(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", json=body) as resp:
            return resp.status, await resp.json(content_type=None)


# -- config ------------------------------------------------------------------------------------


def test_config_apps_with_their_own_pools_and_a_default() -> None:
    data = proxy_config({"blue": ["127.0.0.1:1"]}, "blue", None)
    hosts = ["Shop.Example.com.", "*.shop.example.com"]
    data["apps"] = {
        "shop": {"hosts": hosts, "pools": {"blue": {"endpoints": ["127.0.0.1:2"]}}, "routes": {"active": "blue"}}
    }
    config = parse_config(data, "apps.yaml")
    assert [(a.name, a.hosts, a.active, a.preview) for a in config.apps] == [
        ("default", (), "blue", None),
        ("shop", ("shop.example.com", "*.shop.example.com"), "shop/blue", None),
    ]
    assert [p.name for p in config.pools] == ["blue", "shop/blue"]
    # Only applications, no default: valid (a Host none of them names is answered 404).
    del data["pools"], data["routes"]
    assert [a.name for a in parse_config(data, "apps.yaml").apps] == ["shop"]


@pytest.mark.parametrize(
    ("edit", "where", "reason"),
    [
        (lambda d: d["apps"]["shop"].pop("hosts"), "apps.shop.hosts", "required key is missing"),
        (lambda d: d["apps"]["shop"].update(hosts=[]), "apps.shop.hosts", "at least one host"),
        (lambda d: d["apps"]["shop"].update(hosts=["shop.example.com/x"]), "apps.shop.hosts[0]", "not a host name"),
        (lambda d: d["apps"]["shop"].update(hosts=["a.*.example.com"]), "apps.shop.hosts[0]", "not a host name"),
        (
            lambda d: d["apps"]["blog"].update(hosts=["SHOP.example.com"]),
            "apps.blog.hosts[0]",
            "already a host of application 'shop'",
        ),
        (lambda d: d["apps"]["shop"]["routes"].update(active="red"), "apps.shop.routes.active", "unknown pool 'red'"),
        (lambda d: d["apps"]["shop"].update(colour=1), "apps.shop.colour", "unknown key"),
        (lambda d: d["apps"].update(default=d["apps"].pop("blog")), "apps.default", "'default' is the top-level"),
        (lambda d: d["apps"].update({"a/b": d["apps"].pop("blog")}), "apps.a/b", "an application name"),
        (lambda d: d["apps"]["shop"]["pools"].update({"a/b": {"endpoints": []}}), "apps.shop.pools.a/b", "a pool name"),
        (lambda d: d.pop("routes"), "routes", "required key is missing"),
        (lambda d: d.update(apps={}), "apps", "at least one application"),
    ],
)
def test_config_refuses_bad_apps_naming_the_key(edit: Any, where: str, reason: str) -> None:
    data = proxy_config({"blue": ["127.0.0.1:1"]}, "blue", None)
    data["apps"] = {
        name: {
            "hosts": [f"{name}.example.com"],
            "pools": {"blue": {"endpoints": ["127.0.0.1:2"]}},
            "routes": {"active": "blue"},
        }
        for name in ("shop", "blog")
    }
    edit(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "apps.yaml")
    assert err.value.path == where and reason in err.value.reason, str(err.value)
    assert str(err.value).startswith("apps.yaml: ")


# -- routing by Host ------------------------------------------------------------------------------


async def test_host_picks_the_application_exact_wildcard_port_case_and_absolute_form(
    start_proxy: StartProxy, upstream: StartUpstream
) -> None:
    proxy = await shop_and_default(start_proxy, upstream)
    port = proxy.ports["active"]
    assert upstream_of(await get(port, "shop.example.com")) == "shop-blue"
    assert upstream_of(await get(port, "SHOP.Example.COM:8080")) == "shop-blue"
    assert upstream_of(await get(port, "eu.shop.example.com")) == "shop-blue"  # the wildcard: one label
    assert upstream_of(await get(port, "a.eu.shop.example.com")) == "blue"  # two labels: not the wildcard's
    assert upstream_of(await get(port, "example.com")) == "blue"  # no application names it: the default
    assert upstream_of(await get(port, "127.0.0.1")) == "blue"
    # Absolute-form: the target's authority is the Host (RFC 9112 §3.2.2), so it picks the application.
    assert upstream_of(await get(port, "example.com", target="http://shop.example.com/color")) == "shop-blue"
    # The preview listener: each application's own preview pool; the header names the pool in its application.
    status, headers, _ = await get(proxy.ports["preview"], "shop.example.com")
    assert (status, headers["x-upstream"], headers["x-served-by-color"]) == (200, "shop-green", "green")
    # HTTP/1.0 without Host: the default application.
    (response,) = parse_responses(await raw_request(port, b"GET /color HTTP/1.0\r\n\r\n"))
    assert upstream_of(response) == "blue"


async def test_one_keep_alive_connection_follows_each_requests_host(
    start_proxy: StartProxy, upstream: StartUpstream
) -> None:
    proxy = await shop_and_default(start_proxy, upstream)
    hosts = ["shop.example.com", "example.com", "x.shop.example.com", "shop.example.com", "other"]
    data = b"".join(f"GET /color HTTP/1.1\r\nHost: {h}\r\n\r\n".encode() for h in hosts)
    data += b"GET /color HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    responses = parse_responses(await raw_request(proxy.ports["active"], data))
    assert [upstream_of(r) for r in responses] == ["shop-blue", "blue", "shop-blue", "shop-blue", "blue", "blue"]


async def test_without_a_default_an_unknown_host_is_404_and_reaches_no_upstream(
    start_proxy: StartProxy, upstream: StartUpstream, raw_upstream: Any
) -> None:
    recording = raw_upstream()
    address = await recording.start()
    data = proxy_config({}, "x", None)
    del data["pools"], data["routes"]
    data["apps"] = {
        "shop": {**SHOP, "pools": {"blue": {"endpoints": [await upstream("shop-blue")]}}, "routes": {"active": "blue"}},
        "blog": {
            "hosts": ["blog.example.com"],
            "pools": {"blue": {"endpoints": [address]}},
            "routes": {"active": "blue"},
        },
    }
    server = ProxyServer(parse_config(data, "<test>"))
    await server.start()
    try:
        port = server.ports["active"]
        status, headers, body = await get(port, "unknown.example.com")
        assert status == 404 and b"no application" in body and headers["connection"] == "close"
        assert upstream_of(await get(port, "shop.example.com")) == "shop-blue"
        assert recording.received == b""  # the unknown Host never reached another application's pool
        # The original admin paths name the default application, which this proxy has not: 404 saying why.
        status, body = await admin(server.ports["admin"], "GET", "/api/v1/routes")
        assert status == 404 and "no default application" in body["error"]
        status, body = await admin(server.ports["admin"], "GET", "/api/v1/apps")
        assert status == 200 and set(body["apps"]) == {"shop", "blog"}
    finally:
        await server.stop(grace=1.0)


# -- the admin API per application ------------------------------------------------------------------


async def test_admin_api_per_application(start_proxy: StartProxy, upstream: StartUpstream) -> None:
    proxy = await shop_and_default(start_proxy, upstream)
    port, admin_port = proxy.ports["active"], proxy.ports["admin"]
    status, body = await admin(admin_port, "GET", "/api/v1/apps")
    assert status == 200
    assert body["apps"]["shop"] == {
        "hosts": ["shop.example.com", "*.shop.example.com"],
        "default": False,
        "routes": {"active": "blue", "preview": "green", "generation": 1},
    }
    assert body["apps"]["default"]["default"] is True

    # A flip of shop: its own generation moves; the default application's routes and traffic do not change.
    status, body = await admin(admin_port, "POST", "/api/v1/apps/shop/switch", {"active": "green"})
    assert (status, body) == (200, {"active": "green", "preview": "blue", "generation": 2})
    assert (await admin(admin_port, "GET", "/api/v1/routes"))[1] == {
        "active": "blue",
        "preview": "green",
        "generation": 1,
    }
    assert upstream_of(await get(port, "shop.example.com")) == "shop-green"
    assert upstream_of(await get(port, "example.com")) == "blue"
    # Compare-and-swap is per application.
    status, body = await admin(admin_port, "POST", "/api/v1/apps/shop/switch", {"active": "blue", "generation": 1})
    assert status == 409 and "generation 1 is not the current one (2)" in body["error"]

    # Pools: created in one application only, listed by their names there, deleted there.
    canary = await upstream("shop-canary")
    status, body = await admin(admin_port, "PUT", "/api/v1/apps/shop/pools/canary", {"endpoints": [canary]})
    assert status == 201 and body["name"] == "canary"
    status, body = await admin(admin_port, "GET", "/api/v1/apps/shop/pools")
    assert [p["name"] for p in body["pools"]] == ["blue", "green", "canary"]
    assert [p["routes"] for p in body["pools"]] == [["preview"], ["active"], []]
    status, body = await admin(admin_port, "GET", "/api/v1/pools")
    assert [p["name"] for p in body["pools"]] == ["blue", "green"]
    status, body = await admin(admin_port, "POST", "/api/v1/switch", {"active": "canary"})
    assert status == 404 and "unknown pool 'canary'" in body["error"]  # not a pool of the default application
    status, body = await admin(admin_port, "DELETE", "/api/v1/apps/shop/pools/green")
    assert status == 409 and "named by a route" in body["error"]
    status, body = await admin(admin_port, "DELETE", "/api/v1/apps/shop/pools/canary")
    assert (status, body) == (200, {"deleted": "canary"})

    # An unknown application: 404 with the ones there are, for every call.
    for method, path, payload in (
        ("GET", "/api/v1/apps/blog/routes", None),
        ("POST", "/api/v1/apps/blog/switch", {"active": "blue"}),
        ("GET", "/api/v1/apps/blog/pools", None),
        ("PUT", "/api/v1/apps/blog/pools/x", {"endpoints": [canary]}),
        ("DELETE", "/api/v1/apps/blog/pools/x", None),
    ):
        status, body = await admin(admin_port, method, path, payload)
        assert status == 404 and "unknown application 'blog' (applications: default, shop)" in body["error"], path


async def test_metrics_and_access_log_name_the_application(
    start_proxy: StartProxy, upstream: StartUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = await shop_and_default(start_proxy, upstream, access_log={"path": str(log), "format": "json"})
    port = proxy.ports["active"]
    for host in ("shop.example.com", "shop.example.com", "example.com"):
        await get(port, host)
    await admin(proxy.ports["admin"], "POST", "/api/v1/apps/shop/switch", {"active": "green"})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{proxy.ports['admin']}/metrics") as resp:
            text = await resp.text()
    assert 'bluegreen_requests_total{app="shop",listener="active",pool="blue",status_class="2xx"} 2.0' in text
    assert 'bluegreen_requests_total{app="default",listener="active",pool="blue",status_class="2xx"} 1.0' in text
    assert 'bluegreen_route{app="shop",listener="active",pool="green"} 1.0' in text
    assert 'bluegreen_route{app="default",listener="active",pool="blue"} 1.0' in text
    assert 'bluegreen_route_generation{app="shop"} 2.0' in text
    assert 'bluegreen_route_generation{app="default"} 1.0' in text

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    await wait_until(lambda: len(lines()) >= 3, within=5)
    records = lines()
    assert [(r["app"], r["pool"], r["generation"]) for r in records] == [
        ("shop", "blue", 1),
        ("shop", "blue", 1),
        ("default", "blue", 1),
    ]


async def test_events_name_the_application_of_a_flip(start_proxy: StartProxy, upstream: StartUpstream) -> None:
    proxy = await shop_and_default(start_proxy, upstream)
    await admin(proxy.ports["admin"], "POST", "/api/v1/apps/shop/switch", {"active": "green"})
    status, body = await admin(proxy.ports["admin"], "GET", "/api/v1/events")
    flips = [e for e in body["events"] if e["event"] == "flip"]
    assert flips[-1]["app"] == "shop" and (flips[-1]["active_from"], flips[-1]["active_to"]) == ("blue", "green")
    assert "flip of shop: active blue -> green" in flips[-1]["message"]


# -- TLS: the server name and the Host name the same application, or 421 -------------------------------


async def curl(ca: CertAuthority, name: str, port: int, *more: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-m", "10", "--cacert", str(ca.pem), "--resolve", f"{name}:{port}:127.0.0.1",
        "-w", "\n%{http_code}", *more, f"https://{name}:{port}/color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_tls_server_name_and_host_must_name_the_same_application(upstream: StartUpstream, tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path)
    site, shop = ca.issue("site", "example.com"), ca.issue("shop", "shop.example.com", "*.shop.example.com")
    tls = {"certificates": [{"cert": str(c.cert), "key": str(c.key)} for c in (site, shop)]}
    data = proxy_config({"blue": [await upstream("blue")]}, "blue", None)
    data["listeners"]["active"]["tls"] = tls
    data["apps"] = {
        "shop": {**SHOP, "pools": {"blue": {"endpoints": [await upstream("shop-blue")]}}, "routes": {"active": "blue"}}
    }
    server = ProxyServer(parse_config(data, "<test>"))
    await server.start()
    try:
        port = server.ports["active"]
        code, out = await curl(ca, "shop.example.com", port)
        assert code == 0 and out.endswith('"shop-blue"\n200'), out
        code, out = await curl(ca, "eu.shop.example.com", port)
        assert code == 0 and out.endswith('"shop-blue"\n200'), out
        code, out = await curl(ca, "example.com", port)
        assert code == 0 and out.endswith('"blue"\n200'), out
        # The connection was opened for shop (SNI) and asks for the default application: 421, nothing served.
        code, out = await curl(ca, "shop.example.com", port, "-H", "Host: example.com")
        assert code == 0 and out.endswith("421") and "Misdirected Request" in out, out
        code, out = await curl(ca, "example.com", port, "-H", "Host: shop.example.com")
        assert code == 0 and out.endswith("421"), out
        # No server name (an address): the Host alone decides.
        code, out = await curl(ca, "127.0.0.1", port, "-k", "-H", "Host: shop.example.com")
        assert code == 0 and out.endswith('"shop-blue"\n200'), out
    finally:
        await server.stop(grace=1.0)


# -- the real command: CLI --app, reload, and flips of one application under load (1 and 2 workers) --------


def two_apps(shop: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "apps": {
            "shop": {
                **SHOP,
                "pools": {name: {"endpoints": eps} for name, eps in shop.items()},
                "routes": {"active": "blue", "preview": "green"},
            }
        }
    }


async def bluegreen(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bluegreen", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_flips_of_one_application_under_load_never_touch_the_other(
    upstream: StartUpstream, tmp_path: Path, workers: str
) -> None:
    """Load on both applications while `bluegreen switch --app shop` flips shop back and forth: no request of
    either fails, the default application is served by its blue pool throughout, and every shop request that
    began after a flip was acknowledged is served by the pool that flip named."""
    shop = {"blue": [await upstream("shop-blue")], "green": [await upstream("shop-green")]}
    default = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, default, "blue", "green", **two_apps(shop)).start("--workers", workers)
    admin_url = f"http://127.0.0.1:{proxy.ports['admin']}"
    failures: list[str] = []
    served: dict[str, list[str]] = {"default": [], "shop": []}
    asked: list[float] = []  # when each flip was asked for
    acknowledged: list[tuple[float, str]] = []  # (time the flip answered, pool now live)
    timeline: list[tuple[float, str]] = []  # shop's requests: (when begun, upstream that answered)
    stop = time.monotonic() + 30

    async def client(host: str, app: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.ports["active"])
        try:
            for _ in range(20000):  # bounded: the flips end the load long before this
                if time.monotonic() > stop or len(acknowledged) >= 8:
                    break
                begun = time.monotonic()
                writer.write(f"GET /color HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
                await reader.readexactly(int(fields["Content-Length"]))
                if not head.startswith(b"HTTP/1.1 200"):
                    failures.append(head.decode())
                name = fields["X-Upstream"]
                served[app].append(name)
                if app == "shop":
                    timeline.append((begun, name))
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures.append(repr(exc))
        finally:
            writer.close()

    async def flips() -> None:
        await asyncio.sleep(0.3)
        for i in range(8):
            target = "green" if i % 2 == 0 else "blue"
            asked.append(time.monotonic())
            code, out = await bluegreen("switch", target, "--app", "shop", "--admin", admin_url)
            assert code == 0 and f"application shop: generation {i + 2}: active -> {target}" in out, out
            acknowledged.append((time.monotonic(), target))
            await asyncio.sleep(0.1)

    try:
        clients = [client("shop.example.com", "shop") for _ in range(3)] + [
            client("example.com", "default") for _ in range(3)
        ]
        await asyncio.gather(flips(), *clients)
        code, out = await bluegreen("status", "--app", "shop", "--admin", admin_url)
        assert code == 0 and "application shop: generation 9: active -> blue, preview -> green" in out, out
        assert "default" in out and "every other Host" in out, out  # the other applications, a line each
        code, out = await bluegreen("status", "--admin", admin_url)
        assert code == 0 and "application default: generation 1: active -> blue" in out, out
    finally:
        await proxy.stop()
    assert failures == []
    # A shop request begun after flip k was acknowledged, and before flip k+1 was asked for, is served by the
    # pool flip k made live (a request begun while a flip is under way may be served by either pool).
    late = []
    for k, (at, pool) in enumerate(acknowledged):
        until = asked[k + 1] if k + 1 < len(asked) else float("inf")
        late += [(k, name) for begun, name in timeline if at < begun < until and name != f"shop-{pool}"]
    assert late == []
    assert set(served["default"]) == {"blue"} and len(served["default"]) > 100
    assert set(served["shop"]) == {"shop-blue", "shop-green"}


async def test_reload_adds_and_removes_an_application(upstream: StartUpstream, tmp_path: Path) -> None:
    default = {"blue": [await upstream("blue")]}
    proxy = await ProxyProcess(tmp_path, default, "blue", None).start("--workers", "2")
    try:
        port = proxy.ports["active"]
        assert upstream_of(await get(port, "shop.example.com")) == "blue"
        config = yaml.safe_load(proxy.path.read_text())
        config["apps"] = {
            "shop": {
                **SHOP,
                "pools": {"blue": {"endpoints": [await upstream("shop-blue")]}},
                "routes": {"active": "blue"},
            }
        }
        proxy.path.write_text(yaml.safe_dump(config))
        status, body = await admin(proxy.ports["admin"], "POST", "/api/v1/reload")
        assert status == 200 and "apps.shop (new)" in body["changed"], body
        assert body["apps"]["shop"] == {"active": "blue", "preview": None, "generation": 1}
        assert upstream_of(await get(port, "shop.example.com")) == "shop-blue"
        assert upstream_of(await get(port, "example.com")) == "blue"
        del config["apps"]
        proxy.path.write_text(yaml.safe_dump(config))
        status, body = await admin(proxy.ports["admin"], "POST", "/api/v1/reload")
        assert status == 200 and "apps.shop (removed)" in body["changed"], body
        assert upstream_of(await get(port, "shop.example.com")) == "blue"  # the default application again
    finally:
        await proxy.stop()


async def test_hot_upgrade_keeps_every_applications_routes(upstream: StartUpstream, tmp_path: Path) -> None:
    shop = {"blue": [await upstream("shop-blue")], "green": [await upstream("shop-green")]}
    default = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await started(await ProxyProcess(tmp_path, default, "blue", "green", **two_apps(shop)).start())
    new = None
    try:
        status, _ = await admin(proxy.ports["admin"], "POST", "/api/v1/apps/shop/switch", {"active": "green"})
        assert status == 200
        new = await upgrade(proxy)
        port = proxy.ports["active"]
        assert upstream_of(await get(port, "shop.example.com")) == "shop-green"
        assert upstream_of(await get(port, "example.com")) == "blue"
        status, body = await admin(proxy.ports["admin"], "GET", "/api/v1/apps/shop/routes")
        assert body == {"active": "green", "preview": "blue", "generation": 2}
    finally:
        if new is not None:
            await new.stop(15)
        await proxy.stop()


async def test_a_fleet_flips_one_application_everywhere(upstream: StartUpstream, tmp_path: Path) -> None:
    """Two proxies sharing their state through etcd: a flip of shop on one is served by both, with shop's
    generation; the default application keeps its routes on both."""
    etcd = await EtcdProcess(tmp_path / "etcd").start()
    shop = {"blue": [await upstream("shop-blue")], "green": [await upstream("shop-green")]}
    default = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxies: list[ProxyProcess] = []
    try:
        for name in ("p0", "p1"):
            (tmp_path / name).mkdir()
            state = {
                "backend": "etcd",
                "endpoints": [etcd.endpoint],
                "prefix": "/bg-apps/",
                "lease_ttl": "2s",
                "name": name,
            }
            proxies.append(
                await ProxyProcess(tmp_path / name, default, "blue", "green", state=state, **two_apps(shop)).start()
            )
        status, body = await admin(proxies[0].ports["admin"], "POST", "/api/v1/apps/shop/switch", {"active": "green"})
        assert status == 200 and body["generation"] == 2 and sorted(body["fleet"]["acked"]) == ["p0", "p1"], body
        for proxy in proxies:
            assert upstream_of(await get(proxy.ports["active"], "shop.example.com")) == "shop-green"
            assert upstream_of(await get(proxy.ports["active"], "example.com")) == "blue"
            status, body = await admin(proxy.ports["admin"], "GET", "/api/v1/apps")
            assert body["apps"]["shop"]["routes"] == {"active": "green", "preview": "blue", "generation": 2}
            assert body["apps"]["default"]["routes"] == {"active": "blue", "preview": "green", "generation": 1}
    finally:
        for proxy in proxies:
            await proxy.stop()
        await etcd.kill()
