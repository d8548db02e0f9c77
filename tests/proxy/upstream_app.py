"""A real upstream for tests: an aiohttp server whose routes exercise the proxy's HTTP handling."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import WSMsgType, web


def make_app(name: str) -> web.Application:
    async def color(request: web.Request) -> web.Response:
        return web.json_response(name, headers={"X-Upstream": name})

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        body = {
            "upstream": name,
            "method": request.method,
            "path": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
            "size": size,
            "sha256": digest.hexdigest(),
        }
        return web.json_response(body, headers={"X-Upstream": name})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("ms", "500")) / 1000)
        return web.json_response(name, headers={"X-Upstream": name})

    async def stream(request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "5"))
        delay = float(request.query.get("ms", "50")) / 1000
        resp = web.StreamResponse(headers={"X-Upstream": name, "Content-Type": "text/plain"})
        await resp.prepare(request)
        for i in range(chunks):
            await resp.write(f"{name} chunk {i}\n".encode())
            await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.Response:
        size = int(request.query.get("size", "65536"))
        return web.Response(body=b"x" * size, headers={"X-Upstream": name})

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.Response(status=code, body=None if code in (204, 304) else b"status\n", headers={"X-Upstream": name})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(f"{name}:{msg.data}")
        return sock

    async def firehose(request: web.Request) -> web.StreamResponse:
        # Streams `mb` MiB as fast as the connection takes it, recording progress for /progress.
        total = int(request.query.get("mb", "50")) * 1024 * 1024
        resp = web.StreamResponse(headers={"X-Upstream": name})
        resp.content_length = total
        await resp.prepare(request)
        block = b"f" * 65536
        sent = 0
        while sent < total:
            await resp.write(block)
            sent += len(block)
            progress["firehose"] = sent
        return resp

    async def sink(request: web.Request) -> web.Response:
        # Never reads the body: the proxy must stop reading the client rather than buffer it.
        await asyncio.sleep(float(request.query.get("ms", "3000")) / 1000)
        return web.Response(text="late")

    async def get_progress(request: web.Request) -> web.Response:
        return web.json_response(progress)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    progress: dict[str, int] = {}
    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/", color)
    app.router.add_get("/color", color)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/stream", stream)
    app.router.add_get("/big", big)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/firehose", firehose)
    app.router.add_post("/sink", sink)
    app.router.add_get("/progress", get_progress)
    return app


def main() -> None:
    """`python -m tests.proxy.upstream_app NAME PORT`: the app in its own process (for kill tests)."""
    import sys

    name, port = sys.argv[1], int(sys.argv[2])
    web.run_app(make_app(name), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
