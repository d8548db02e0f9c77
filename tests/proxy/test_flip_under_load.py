"""The contract of the flip: under load, zero failed requests, and nothing begun after an ack on the old pool."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.proxy.conftest import StartUpstream
from tests.proxy.support import ProxyProcess, RawClient

DURATION = 3.0
FLIP_EVERY = 0.05


@dataclass
class Flip:
    started: float
    acked: float
    active: str


@dataclass
class Record:
    sent: float
    received: float
    color: str


@dataclass
class Load:
    records: list[Record] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    uploads: int = 0


async def client_loop(port: int, load: Load, stop: float, *, fresh: bool) -> None:
    client = RawClient(port)
    n = 0
    try:
        while time.monotonic() < stop and n < 20_000:
            n += 1
            sent = time.monotonic()
            body = random.randbytes(random.randint(1, 16384)) if n % 4 == 0 else b""
            try:
                if body:  # every 4th request uploads a body, verified by digest at the upstream
                    resp = await asyncio.wait_for(client.request("/echo", method="POST", body=body, close=fresh), 5)
                else:
                    resp = await asyncio.wait_for(client.request("/color", close=fresh), 5)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                load.failures.append(f"{type(exc).__name__}: {exc}")
                await client.close()
                continue
            if resp.status != 200:
                load.failures.append(f"status {resp.status}: {resp.body[:80]!r}")
                continue
            color = resp.headers[b"x-served-by-color"].decode()
            if body:
                echo = json.loads(resp.body)
                assert echo["upstream"] == color and echo["sha256"] == hashlib.sha256(body).hexdigest()
                load.uploads += 1
            else:
                assert resp.body == f'"{color}"'.encode()  # the body comes from the pool the header names
            load.records.append(Record(sent, time.monotonic(), color))
    finally:
        await client.close()


async def flipper(admin: int, flips: list[Flip], stop: float) -> None:
    color = "green"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop and len(flips) < 500:
            started = time.monotonic()
            async with session.post(f"http://127.0.0.1:{admin}/api/v1/switch", json={"active": color}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["active"] == color
            flips.append(Flip(started, time.monotonic(), color))
            color = "blue" if color == "green" else "green"
            await asyncio.sleep(FLIP_EVERY)  # paces the flips: it waits for nothing


def stale(records: list[Record], flips: list[Flip]) -> list[str]:
    """A request sent after flip k was acked must be served by flip k's pool, or by flip k+1's if that began
    before the response arrived. Anything else was served by a pool the proxy had already left."""
    bad = []
    for r in records:
        k = max((i for i, f in enumerate(flips) if f.acked <= r.sent), default=None)
        if k is None:
            continue
        allowed = {flips[k].active}
        if k + 1 < len(flips) and flips[k + 1].started <= r.received:
            allowed.add(flips[k + 1].active)
        if r.color not in allowed:
            bad.append(f"sent {r.sent - flips[k].acked:.4f}s after ack of {flips[k].active}, served by {r.color}")
    return bad


@pytest.mark.parametrize("workers", [1, 2])
async def test_flip_under_load_zero_failures_zero_stale(upstream: StartUpstream, tmp_path: Path, workers: int) -> None:
    blue = [await upstream("blue"), await upstream("blue")]
    green = [await upstream("green"), await upstream("green")]
    proxy = await ProxyProcess(tmp_path, {"blue": blue, "green": green}, "blue", "green").start(
        "--workers", str(workers)
    )
    try:
        load, flips = Load(), list[Flip]()
        stop = time.monotonic() + DURATION
        tasks = [client_loop(proxy.ports["active"], load, stop, fresh=False) for _ in range(16)]
        tasks += [client_loop(proxy.ports["active"], load, stop, fresh=True) for _ in range(4)]
        await asyncio.gather(flipper(proxy.ports["admin"], flips, stop), *tasks)
    finally:
        code, out = await proxy.stop()
    assert code == 0, out
    assert load.failures == [], load.failures[:5]
    assert len(flips) >= 20
    assert len(load.records) > 1000 and load.uploads > 100
    assert {r.color for r in load.records} == {"blue", "green"}
    bad = stale(load.records, flips)
    assert bad == [], bad[:5]
