"""SIGHUP and POST /api/v1/reload: a valid config applies atomically under load; an invalid one changes nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.proxy.conftest import StartUpstream
from tests.proxy.support import ProxyProcess, RawClient, keep_requesting
from tests.support import wait_until


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_reload_applies_atomically_and_refuses_bad_config(
    upstream: StartUpstream, tmp_path: Path, workers: str
) -> None:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", workers)
    admin = f"http://127.0.0.1:{proxy.ports['admin']}"
    good = yaml.safe_load(proxy.path.read_text())
    try:
        async with aiohttp.ClientSession() as session:
            failures: list[str] = []
            colors: list[str] = []
            stop = time.monotonic() + 1.5
            load = asyncio.gather(*(keep_requesting(proxy.ports["active"], stop, failures, colors) for _ in range(8)))
            await wait_until(lambda: "blue" in colors, message="traffic on blue")
            # 1. A valid new config over the admin API: routes and a new pool, in one step.
            new = dict(good, routes={"active": "green", "preview": "yellow"})
            new["pools"] = dict(good["pools"], yellow={"endpoints": [await upstream("yellow")]})
            proxy.path.write_text(yaml.safe_dump(new))
            async with session.post(f"{admin}/api/v1/reload") as resp:
                assert resp.status == 200
                body = await resp.json()
            assert body["routes"] == {"active": "green", "preview": "yellow", "generation": 2}
            assert "routes" in body["changed"] and "pools.yellow (new)" in body["changed"]
            # 2. An invalid config is refused and nothing changes.
            bad = dict(new, listeners=dict(new["listeners"], active={"host": "127.0.0.1", "port": "nope"}))
            proxy.path.write_text(yaml.safe_dump(bad))
            async with session.post(f"{admin}/api/v1/reload") as resp:
                assert resp.status == 400
                assert "listeners.active.port" in (await resp.json())["error"]
            proxy.path.write_text("routes: [unclosed\n")
            assert proxy.proc is not None
            proxy.proc.send_signal(signal.SIGHUP)
            await load
            async with session.get(f"{admin}/api/v1/routes") as resp:
                assert (await resp.json())["generation"] == 2
            # 3. SIGHUP with a valid file flips back.
            proxy.path.write_text(yaml.safe_dump(dict(new, routes={"active": "blue", "preview": "green"})))
            proxy.proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                async with session.get(f"{admin}/api/v1/routes") as resp:
                    return bool((await resp.json())["generation"] == 3)

            await wait_until(reloaded, 15, message="the reload on SIGHUP")  # 15 s: a loaded machine
            client = RawClient(proxy.ports["active"])
            assert (await client.request()).headers[b"x-served-by-color"] == b"blue"
            await client.close()
        assert failures == []
        assert "blue" in colors and "green" in colors
        assert colors.index("green") > colors.index("blue")
    finally:
        code, out = await proxy.stop()
    assert code == 0, out
    assert "reload refused" in out and "Traceback" not in out


async def reload_with(
    session: aiohttp.ClientSession, admin: str, path: Path, config: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config))
    async with session.post(f"{admin}/api/v1/reload") as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_reload_keeps_the_live_routes_unless_the_file_changed_them(
    upstream: StartUpstream, tmp_path: Path, workers: str
) -> None:
    """The routes set through the admin API are the live state: a reload of the same file keeps them; the
    file's routes apply only when they changed since it was last loaded, and then with a flip's checks."""
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = await ProxyProcess(tmp_path, pools, "blue", "green").start("--workers", workers)
    admin = f"http://127.0.0.1:{proxy.ports['admin']}"
    loaded = yaml.safe_load(proxy.path.read_text())
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{admin}/api/v1/switch", json={"active": "green"}) as resp:
                assert (await resp.json())["generation"] == 2
            # The unchanged file: green stays live (it flipped back to blue before).
            status, body = await reload_with(session, admin, proxy.path, loaded)
            assert status == 200 and body["routes"] == {"active": "green", "preview": "blue", "generation": 2}
            assert "routes" not in body["changed"]
            # The file now routes a pool with no healthy endpoint: refused as the flip would be; nothing changes.
            dead = dict(loaded, routes={"active": "yellow", "preview": "blue"})
            dead["pools"] = dict(loaded["pools"], yellow={"endpoints": ["127.0.0.1:9"]})
            status, body = await reload_with(session, admin, proxy.path, dead)
            assert status == 409 and "no healthy endpoint" in body["error"]
            async with session.get(f"{admin}/api/v1/routes") as resp:
                assert await resp.json() == {"active": "green", "preview": "blue", "generation": 2}
            async with session.get(f"{admin}/api/v1/pools") as resp:
                assert "yellow" not in {p["name"] for p in (await resp.json())["pools"]}
            # The file routes a healthy new pool: a flip, logged as one.
            live = dict(dead)
            live["pools"] = dict(loaded["pools"], yellow={"endpoints": [await upstream("yellow")]})
            status, body = await reload_with(session, admin, proxy.path, live)
            assert status == 200 and body["routes"] == {"active": "yellow", "preview": "blue", "generation": 3}
            assert "routes" in body["changed"]
            client = RawClient(proxy.ports["active"])
            assert (await client.request()).headers[b"x-served-by-color"] == b"yellow"
            await client.close()
    finally:
        code, out = await proxy.stop()
    assert code == 0, out
    assert "reload flips routes: active green -> yellow" in out
