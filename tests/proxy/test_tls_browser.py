"""A real browser through a TLS listener: Debian's headless Chromium (driven by Playwright, as the dashboard
test does) loads a page from a real upstream through the real `bluegreen proxy` process, whose active listener
terminates TLS with a certificate from a test CA. Chromium trusts exactly that certificate's key
(`--ignore-certificate-errors-spki-list`), not every certificate: without the flag the same page is refused.
curl asking for HTTP/2 gets http/1.1 from ALPN, and its request still works."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Error as PlaywrightError, async_playwright

from tests.proxy.support import ProxyProcess
from tests.support.certs import CertAuthority
from tests.support.chromium import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.slow

WAIT_MS = 15_000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>shop ({color})</title><link rel="stylesheet" href="/style.css"></head>
<body><h1 id="served">served by {color}</h1><p id="api">waiting</p>
<script src="/app.js"></script></body></html>
"""
SCRIPT = """fetch('/api/whoami').then(r => r.json()).then(j => {
  document.getElementById('api').textContent = 'api: ' + j.color + ' over ' + j.proto;
});
"""


@contextlib.asynccontextmanager
async def page_upstream(color: str) -> AsyncIterator[tuple[str, list[tuple[str, str]]]]:
    """An application on a free loopback port: a page, its stylesheet and script, and a JSON API that says
    which color answered and what the proxy told it of the client's scheme. Yields its address and the
    (path, X-Forwarded-Proto) of every request it served."""
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.append((request.path, request.headers.get("X-Forwarded-Proto", "")))
        return await handler(request)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE.format(color=color), content_type="text/html")

    async def style(_: web.Request) -> web.Response:
        return web.Response(text="h1 { color: rgb(0, 0, 255); }", content_type="text/css")

    async def script(_: web.Request) -> web.Response:
        return web.Response(text=SCRIPT, content_type="application/javascript")

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"color": color, "proto": request.headers.get("X-Forwarded-Proto", "")})

    app = web.Application(middlewares=[record])
    app.router.add_get("/", page)
    app.router.add_get("/style.css", style)
    app.router.add_get("/app.js", script)
    app.router.add_get("/api/whoami", whoami)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def spki_hash(cert: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what Chromium's --ignore-certificate-errors-spki-list takes."""
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.asynccontextmanager
async def tls_proxy(tmp_path: Path, blue: str, green: str) -> AsyncIterator[tuple[ProxyProcess, Path]]:
    """The real `bluegreen proxy` process; its active listener terminates TLS (a leaf for localhost and
    127.0.0.1 from a test CA). Yields the proxy and the CA's certificate."""
    ca = CertAuthority(tmp_path)
    leaf = ca.issue("site", "localhost", ip="127.0.0.1")
    proxy = ProxyProcess(tmp_path, {"blue": [blue], "green": [green]}, "blue", "green")
    config = yaml.safe_load(proxy.path.read_text())
    config["listeners"]["active"]["tls"] = {"certificates": [{"cert": str(leaf.cert), "key": str(leaf.key)}]}
    proxy.path.write_text(yaml.safe_dump(config))
    await proxy.start()
    try:
        yield proxy, leaf.cert
    finally:
        await proxy.stop()


async def run(*argv: str, within: float = 20) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(child.communicate(), within)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return child.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def test_chromium_loads_a_page_through_a_tls_listener(tmp_path: Path) -> None:
    executable = chromium()
    async with (
        page_upstream("blue") as (blue, blue_seen),
        page_upstream("green") as (green, green_seen),
        tls_proxy(tmp_path, blue, green) as (proxy, cert),
    ):
        url = f"https://127.0.0.1:{proxy.ports['active']}/"
        trust = f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"
        async with async_playwright() as playwright:
            # The certificate is trusted by its key only: without that, Chromium refuses the page.
            browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
                    await page.goto(url, timeout=WAIT_MS)
            finally:
                await browser.close()
            refused = len(blue_seen)

            browser = await playwright.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, trust])
            try:
                page = await browser.new_page()
                page.set_default_timeout(WAIT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                response = await page.goto(url, wait_until="load")
                assert response is not None and response.status == 200
                assert response.headers["x-served-by-color"] == "blue"  # through the proxy, from the active pool
                security = await response.security_details()
                assert security is not None and security.get("protocol") in ("TLS 1.3", "TLS 1.2"), security
                assert security.get("subjectName") == "localhost", security
                # The page, its stylesheet and script, and the script's fetch all came through the TLS listener.
                await page.wait_for_function("document.getElementById('api').textContent.startsWith('api:')")
                assert await page.text_content("#served") == "served by blue"
                assert await page.text_content("#api") == "api: blue over https"
                assert await page.title() == "shop (blue)"
                color = await page.eval_on_selector("#served", "n => getComputedStyle(n).color")
                assert color == "rgb(0, 0, 255)"  # the stylesheet loaded
                assert errors == []
            finally:
                await browser.close()

        assert refused == 0  # the refused handshake never became a request
        paths = [path for path, _ in blue_seen]
        assert {"/", "/style.css", "/app.js", "/api/whoami"} <= set(paths), paths
        assert {proto for _, proto in blue_seen} == {"https"}, blue_seen
        assert green_seen == []  # nothing leaked to the preview pool


async def test_curl_asking_for_http2_gets_http11_by_alpn(tmp_path: Path) -> None:
    async with (
        page_upstream("blue") as (blue, _),
        page_upstream("green") as (green, _),
        tls_proxy(tmp_path, blue, green) as (proxy, _cert),
    ):
        port = proxy.ports["active"]
        code, out, err = await run(
            "curl", "-sS", "-v", "-m", "10", "--http2", "--cacert", str(tmp_path / "ca.pem"),
            "-w", "\nhttp_version=%{http_version}", f"https://localhost:{port}/api/whoami",
            "--resolve", f"localhost:{port}:127.0.0.1",
        )  # fmt: skip
        assert code == 0, err
        body, _, version = out.rpartition("\n")
        assert version == "http_version=1.1", (out, err)
        assert json.loads(body) == {"color": "blue", "proto": "https"}
        assert "ALPN" in err and "http/1.1" in err, err  # curl offered h2 and http/1.1; the proxy chose http/1.1
        assert "x-served-by-color: blue" in err.lower(), err
