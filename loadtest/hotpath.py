"""The proxy's own cost per request, without sockets: both protocols driven with in-memory transports.

    python -m loadtest.hotpath [--requests N] [--rounds R] [--fields small|browser|64k-upload|64k-response|...]
                               [--instructions [--counter perf|callgrind]]
                               [--access-log FILE [--access-log-format json|combined]]

Feeds a client request and an upstream response (what nginx answers for a small body; with
`--fields browser`, a browser's request with 13 fields and an application's answer with 11; or one of
them with its small counterpart; `api-post`, an API client's small JSON POST; `64k-upload` and
`64k-response`, the bench's 64 KiB cases, each message in one read) through `ClientConnection` and
`UpstreamConnection` as the event loop would, sending held writes after each read as the loop does,
and prints the CPU time per request (best of R rounds). `--instructions` runs
this under `perf stat` for two request counts and prints the instructions per request (the
difference, so start-up cancels out): a steadier figure than time on a shared machine, and the one
quoted in docs/benchmarks.md. `--counter callgrind` counts them with valgrind instead, on a machine whose
perf cannot read the counters (a VM that says `<not supported> instructions`): slower (about 15 s of
start-up per run) but the same count every time. `--access-log FILE` (`/dev/null`, say) turns the
access log on: its lines are formatted in batches as the loop's callback would, and its writer thread
writes them; that thread's CPU counts too. Otherwise no syscall is made, so what it measures is Python,
httptools and the proxy's code; the wrk benchmark (`loadtest.bench`) measures the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from loadtest.bench import API_BODY, API_FIELDS, BODY_SIZE
from proxy.config import parse_config
from proxy.dataplane.accesslog import BATCH, MAX_PENDING
from proxy.dataplane.client import ClientConnection
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.upstream import UpstreamConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9400\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 11:50:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n"
)
# What a browser sends for a page, and what an application behind the proxy answers.
BROWSER_REQUEST = (
    b"GET /account/orders?page=2 HTTP/1.1\r\nHost: 127.0.0.1:9400\r\nConnection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"\r\nsec-ch-ua-mobile: ?0\r\n'
    b'sec-ch-ua-platform: "Linux"\r\nUpgrade-Insecure-Requests: 1\r\n'
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    b"Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: navigate\r\nReferer: http://127.0.0.1:9400/account\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-GB,en;q=0.9\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\r\n"
)
BROWSER_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Thu, 26 Nov 2026 11:50:00 GMT\r\nConnection: keep-alive\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nContent-Length: 6\r\nCache-Control: private, no-cache\r\n"
    b"Vary: Cookie, Accept-Encoding\r\nX-Request-Id: 5e1c2d9a-4b7f-4c1e-9a3b-2f6d8e7c1a0b\r\n"
    b"Set-Cookie: theme=dark; Path=/; SameSite=Lax\r\nX-Content-Type-Options: nosniff\r\n"
    b"Strict-Transport-Security: max-age=31536000\r\n\r\nhello\n"
)
# The bench's API POST, 64 KiB upload and 64 KiB response (`loadtest.bench`), each message in one read.
API_POST = (
    b"POST /api/orders HTTP/1.1\r\nHost: 127.0.0.1:9400\r\n"
    + b"".join(b"%s: %s\r\n" % (name.encode(), value.encode()) for name, value in API_FIELDS)
    + b"Content-Length: %d\r\n\r\n%s" % (len(API_BODY), API_BODY.encode())
)
BODY = b"x" * BODY_SIZE
UPLOAD = (
    b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:9400\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % BODY_SIZE + BODY
)
LARGE_RESPONSE = RESPONSE.replace(b"Content-Length: 6", b"Content-Length: %d" % BODY_SIZE).replace(b"hello\n", BODY)
FIELDS = {
    "small": (REQUEST, RESPONSE),
    "api-post": (API_POST, RESPONSE),
    "64k-upload": (UPLOAD, RESPONSE),
    "64k-response": (REQUEST, LARGE_RESPONSE),
    "browser": (BROWSER_REQUEST, BROWSER_RESPONSE),
    "browser-request": (BROWSER_REQUEST, RESPONSE),
    "browser-response": (REQUEST, BROWSER_RESPONSE),
}


class MemoryTransport:
    """What the protocols use of a transport; writes are kept (the last one) and counted."""

    def __init__(self) -> None:
        self.last: bytes | list[bytes] = b""  # a writelines' pieces are kept as they are: uvloop copies none
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1

    def writelines(self, parts: list[bytes]) -> None:
        self.last = list(parts)  # the caller may clear its list (`Sender.send_held`)
        self.writes += 1

    def sent(self) -> bytes:
        """The last write's bytes."""
        return self.last if isinstance(self.last, bytes) else b"".join(self.last)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


async def run(
    requests: int, rounds: int, fields: str = "small", access_log: str | None = None, log_format: str = "json"
) -> tuple[float, bytes, bytes]:
    """Best CPU seconds per request over `rounds`, and the last upstream request and client response."""
    document: dict[str, Any] = {
        "listeners": {"active": {"port": 0}},
        "pools": {"blue": {"endpoints": ["127.0.0.1:9300"]}},
        "routes": {"active": "blue"},
    }
    if access_log is not None:
        document["access_log"] = {"path": access_log, "format": log_format}
    config = parse_config(document)
    dp = DataPlane(config)
    log = dp.access_log
    client = ClientConnection(dp, "active")
    to_client = MemoryTransport()
    client.connection_made(to_client)  # type: ignore[arg-type]
    endpoint = dp.pools["blue"].endpoints[0]
    upstream = UpstreamConnection(endpoint, dp.outbox)
    to_upstream = MemoryTransport()
    upstream.connection_made(to_upstream)  # type: ignore[arg-type]
    endpoint.idle.append(upstream)
    outbox = dp.outbox
    request, response = FIELDS[fields]

    def serve(n: int) -> None:
        for _ in range(n):
            client.data_received(request)
            if outbox.held:  # as the loop would: it runs the send it was asked for, if any
                outbox.send()
            upstream.data_received(response)
            if outbox.held:
                outbox.send()
            if log is not None and len(log.lines) >= BATCH:
                log.flush()  # as the callback the log asked for would

    serve(min(1000, requests))  # warm up: specialised bytecode, pooled objects
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        serve(requests)
        best = min(best, time.process_time() - started)
    if log is not None:
        await log.close()
        if log.lost:
            print(f"access log: {log.lost} lines dropped (its writer fell {MAX_PENDING} bytes behind)", file=sys.stderr)
    return best / requests, to_upstream.sent(), to_client.sent()


def instructions_per_request(requests: int, fields: str, extra: tuple[str, ...] = (), counter: str = "perf") -> int:
    """User (and, with perf, kernel) instructions for `requests` and 3x as many; the difference per request."""
    counts = []
    for n in (requests, 3 * requests):
        argv = [sys.executable, "-m", "loadtest.hotpath", "--requests", str(n), "--rounds", "1", "--fields", fields]
        if counter == "callgrind":
            argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
        else:
            argv = ["perf", "stat", "-x,", "-e", "instructions", *argv]
        out = subprocess.run(argv + list(extra), capture_output=True, text=True, check=True).stderr
        counts.append(_count(out, counter))
    return (counts[1] - counts[0]) // (2 * requests)


def _count(stderr: str, counter: str) -> int:
    if counter == "callgrind":
        found = re.search(r"Collected : (\d+)", stderr)
        if found is None:
            raise RuntimeError(f"no instruction count in valgrind's output: {stderr[-500:]}")
        return int(found.group(1))
    line = next((line for line in stderr.splitlines() if ",instructions" in line), "")
    if not line[:1].isdigit():
        raise RuntimeError(f"perf cannot count instructions here ({line or stderr[-200:]}); try --counter callgrind")
    return int(line.split(",")[0])


def _shown(message: bytes, limit: int = 400) -> str:
    """A message as printed: its head and the start of a large body."""
    if len(message) <= limit:
        return repr(message)
    return f"{message[:limit]!r}... ({len(message)} bytes)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fields", choices=sorted(FIELDS), default="small", help="the request and response used")
    parser.add_argument("--instructions", action="store_true", help="count instructions (perf stat, or callgrind)")
    parser.add_argument("--counter", choices=("perf", "callgrind"), default="perf", help="what counts them")
    parser.add_argument("--access-log", metavar="FILE", help="turn the access log on, writing to FILE (/dev/null)")
    parser.add_argument("--access-log-format", choices=("json", "combined"), default="json")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    if args.instructions:
        tool = "valgrind" if args.counter == "callgrind" else "perf"
        if shutil.which(tool) is None:
            print(
                f"{tool} is not installed (Debian: {'valgrind' if tool == 'valgrind' else 'linux-perf'})",
                file=sys.stderr,
            )
            return 2
        extra: tuple[str, ...] = ()
        if args.access_log:
            extra = ("--access-log", args.access_log, "--access-log-format", args.access_log_format)
        try:
            count = instructions_per_request(args.requests, args.fields, extra, args.counter)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{count:,} instructions per request ({args.counter})")
        return 0
    from proxy.dataplane.loop import new_event_loop  # uvloop, as the proxy runs

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        seconds, upstream_head, client_response = runner.run(
            run(args.requests, args.rounds, args.fields, args.access_log, args.access_log_format)
        )
    request, response = FIELDS[args.fields]
    if not client_response.endswith(b"\r\n\r\n" + response.partition(b"\r\n\r\n")[2]) or (
        b"x-served-by-color: blue" not in client_response
    ):
        print(f"unexpected response relayed: {_shown(client_response)}", file=sys.stderr)
        return 1
    if not upstream_head.endswith(b"\r\n\r\n" + request.partition(b"\r\n\r\n")[2]):
        print(f"unexpected request relayed: {_shown(upstream_head)}", file=sys.stderr)
        return 1
    print(f"{seconds * 1e6:.2f} µs of CPU per request (no sockets), best of {args.rounds} x {args.requests}")
    print(f"upstream got:  {_shown(upstream_head)}")
    print(f"client got:    {_shown(client_response)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
