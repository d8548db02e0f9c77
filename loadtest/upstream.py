"""Tiny upstreams for the Locust runs: each port answers every request `200` with its color as a JSON string.

    python -m loadtest.upstream --serve blue=9101,9102 --serve green=9201,9202 [--delay green=0.2]

A bare asyncio protocol (uvloop when present) rather than aiohttp, so the upstreams take as little of the
2 shared cores as possible from the proxy and Locust. HTTP/1.1 keep-alive; a request body announced by
Content-Length is read and discarded; `--delay COLOR=SECONDS` makes that color's endpoints answer late
(the slow-pool scenario), in order per connection. Prints `ready` once every port listens; stops on
SIGTERM/SIGINT, printing how many connections each color accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import signal
import sys
from collections.abc import Sequence
from typing import cast

HOST = "127.0.0.1"
MAX_HEAD = 65536


def response(color: str, close: bool) -> bytes:
    body = f'"{color}"'.encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Upstream: {color}\r\n"
        f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


CONNECTIONS: collections.Counter[str] = collections.Counter()  # accepted per color: printed at exit


class ColorServer(asyncio.Protocol):
    def __init__(self, color: str, delay: float) -> None:
        self.color = color
        self.keep = response(color, close=False)
        self.close = response(color, close=True)
        self.delay = delay
        self.buf = bytearray()
        self.body_left = 0
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[tuple[float, bytes, bool]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        CONNECTIONS[self.color] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            if self.body_left:
                take = min(self.body_left, len(self.buf))
                del self.buf[:take]
                self.body_left -= take
                if self.body_left:
                    return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).lower()
            del self.buf[: end + 4]
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip() == b"content-length":
                    self.body_left = int(value.strip() or 0)
            self.answer(b"connection: close" in head)

    def answer(self, close: bool) -> None:
        assert self.transport is not None
        payload = self.close if close else self.keep
        if self.delay <= 0 and not self.pending:
            self.transport.write(payload)
            if close:
                self.transport.close()
            return
        loop = asyncio.get_running_loop()
        self.pending.append((loop.time() + self.delay, payload, close))
        if self.timer is None:
            self.timer = loop.call_at(self.pending[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        loop = asyncio.get_running_loop()
        while self.pending and self.pending[0][0] <= loop.time() and self.transport is not None:
            _, payload, close = self.pending.popleft()
            self.transport.write(payload)
            if close:
                self.transport.close()
                self.pending.clear()
        if self.pending and self.transport is not None:
            self.timer = loop.call_at(self.pending[0][0], self.flush)


def parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        color, sep, rest = item.partition("=")
        if not sep or not color or not rest:
            raise SystemExit(f"upstream: bad {what} {item!r} (want COLOR=...)")
        out[color] = rest
    return out


async def serve(ports: dict[str, list[int]], delays: dict[str, float]) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for color, color_ports in ports.items():
        for port in color_ports:
            factory = functools.partial(ColorServer, color, delays.get(color, 0.0))
            servers.append(await loop.create_server(factory, HOST, port, backlog=1024))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    # How many upstream connections the proxy opened: a flip that closes a pool's idle connections shows here.
    print("connections " + " ".join(f"{c}={n}" for c, n in sorted(CONNECTIONS.items())), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="append", default=[], metavar="COLOR=PORT[,PORT...]", required=True)
    parser.add_argument("--delay", action="append", default=[], metavar="COLOR=SECONDS")
    args = parser.parse_args(argv)
    ports = {c: [int(p) for p in v.split(",")] for c, v in parse_pairs(args.serve, "--serve").items()}
    delays = {c: float(v) for c, v in parse_pairs(args.delay, "--delay").items()}
    try:
        import uvloop  # the cheapest loop: these processes share 2 cores with the proxy and Locust

        uvloop.run(serve(ports, delays))
    except ImportError:
        asyncio.run(serve(ports, delays))
    return 0


if __name__ == "__main__":
    sys.exit(main())
