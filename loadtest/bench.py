"""Benchmark the proxy with wrk against the same upstream reached directly, HAProxy and nginx.

    python -m loadtest.bench [--rounds N --duration S --connections C] [--cases ...] [--tls] [--targets ...]
                             [--flips N] [--bluegreen CMD] [--markdown FILE [--block NAME]] [--json FILE] [--smoke]

One nginx upstream (one worker) serves every target. In front of it: HAProxy 2.6 (one thread),
nginx as a reverse proxy (one worker), and `bluegreen proxy` with one and with two workers, its
blue and green pools both pointing at that upstream. Every (case, target) pair runs once per round
and the rounds interleave the targets (A B C D A B C D ...), so drift on a shared machine hits them
alike; the report gives medians over rounds and ratios to HAProxy measured in the same run.

CPU per request is the utime+stime delta of the target's whole process tree (workers included)
over the wrk run, divided by the requests wrk completed; for `direct` it is the upstream's own CPU.
"of it user" is its user-space part (utime): the rest is the kernel's work for the process (system calls,
the network stack), which the proxies share, so a gap in user space is the proxy's own code.
The flip phase saturates a target with wrk while a loop flips blue/green and times each flip from
request to answer: `POST /api/v1/switch` for ours, HAProxy's runtime socket for HAProxy. Each run
also records the CPU that processes the bench did not start used meanwhile: the noise on a shared
machine.

On request (`--cases`): `api-post`, an API client's small JSON POST (its head and body in one read:
the path `loadtest.hotpath --fields api-post` counts). On request (`--tls`, or TLS cases named in
`--cases`): the same over TLS, every proxy with the same
self-signed ECDSA P-256 certificate and TLS 1.3 suite (checked with `openssl s_client` before the rounds):
keep-alive (`tls-small`, wrk over https), a resumed handshake per request (`tls-resume`, wrk with
`Connection: close`: wrk keeps each connection's session) and a full handshake per request
(`tls-handshake`, parallel `openssl s_time -new`). The target `ours-log` is ours with a json access log to
a file, for the log's cost beside `ours` (its lines are counted and the file emptied after each run).

Everything binds 127.0.0.1 on free ports, runs in a temporary directory, is bounded in time, and
every process started here is stopped here (process groups, SIGTERM then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
BODY_SIZE = 64 * 1024
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
TARGETS = ("direct", "haproxy", "nginx", "ours", "ours-2w", "ours-log")
DEFAULT_TARGETS = ("direct", "haproxy", "nginx", "ours", "ours-2w")  # ours-log on request: `--targets`
FLIP_TARGETS = ("haproxy", "ours", "ours-2w")
BLOCK = "bench"  # the markers `--markdown` writes between: <!-- bench:begin --> ... <!-- bench:end -->

# TLS: the same certificate, protocol, suite and group for HAProxy, nginx and ours. ECDSA P-256 (what an
# ACME client issues by default today); TLS 1.3 with TLS_AES_256_GCM_SHA384, the suite OpenSSL's clients
# (wrk, s_time) offer first and the only one HAProxy and nginx are given; X25519, the first key share
# OpenSSL's clients send. Ours cannot narrow its TLS 1.3 suites from Python, so the bench checks what each
# target negotiates (`openssl s_client`) and refuses to run when they differ. TLS 1.2 gets the matching
# suite everywhere (unused by these clients, which speak TLS 1.3).
TLS13_SUITE = "TLS_AES_256_GCM_SHA384"
TLS12_SUITE = "ECDHE-ECDSA-AES256-GCM-SHA384"
TLS_GROUP = "X25519"
HANDSHAKE_CLIENTS = 8  # parallel `openssl s_time` processes in the tls-handshake case (each is serial)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    title: str
    path: str
    script: str = "get"  # the wrk script: get (wrk's one-field head), upload, browser, close
    one_client: bool = False
    tls: bool = False  # against the targets' TLS listeners (https); opt-in: `--tls` or `--cases`
    client: str = "wrk"  # or "s_time": HANDSHAKE_CLIENTS `openssl s_time -new` processes, full handshakes
    default: bool = True  # in the default --cases (TLS cases never are)


CASES = {
    c.name: c
    for c in (
        Case("small", "GET, small body", "/small"),
        Case(
            "browser",
            "GET, a browser's request head (17 fields, cookies, ~900 B) and an application's answer (14 fields, 2 KiB)",
            "/app",
            script="browser",
        ),
        Case("64k-response", "GET, 64 KiB response", "/64k"),
        Case("64k-upload", "POST, 64 KiB request body, small response", "/upload", script="upload"),
        Case("latency-1c", "GET, small body, one client", "/small", one_client=True),
        Case(
            "api-post",
            "POST, an API client's head (6 fields, a bearer token) and a small JSON body, small response",
            "/upload",
            script="api",
            default=False,
        ),
        Case("tls-small", "GET, small body, over TLS (keep-alive)", "/small", tls=True),
        Case(
            "tls-resume",
            "a new TLS connection per request, resumed (wrk with Connection: close; it reuses its session)",
            "/small",
            script="close",
            tls=True,
        ),
        Case(
            "tls-handshake",
            f"a new TLS connection per request, full handshake ({HANDSHAKE_CLIENTS} × openssl s_time -new)",
            "/small",
            tls=True,
            client="s_time",
        ),
    )
}
DEFAULT_CASES = tuple(name for name, case in CASES.items() if case.default and not case.tls)
EXTRA_CASES = tuple(name for name, case in CASES.items() if not case.default and not case.tls)
TLS_CASES = tuple(name for name, case in CASES.items() if case.tls)

# What a browser sends for a page (Chromium's navigation request, with an application's and an analytics
# tool's cookies): 17 fields, about 900 bytes with the request line. wrk adds Host.
BROWSER_FIELDS = (
    ("Connection", "keep-alive"),
    ("sec-ch-ua", '"Chromium";v="131", "Not_A Brand";v="24"'),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", '"Linux"'),
    ("Upgrade-Insecure-Requests", "1"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-User", "?1"),
    ("Sec-Fetch-Dest", "document"),
    ("Referer", "http://127.0.0.1/account"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-GB,en;q=0.9,de;q=0.8"),
    (
        "Cookie",
        "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; _ga=GA1.1.1432558271.1732617000; "
        "_ga_Q8R2XK=GS1.1.1732617000.4.1.1732619102.0.0.0; _gid=GA1.1.993844822.1732617000; "
        "consent=analytics%3Atrue%2Cads%3Afalse; cart=7d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6",
    ),
    ("Priority", "u=0, i"),
)
# An application's answer: nginx's own fields (Server, Date, Content-Type, Content-Length, Last-Modified,
# Connection, ETag, Accept-Ranges) plus these, over a 2 KiB page.
APP_HEADERS = (
    ("Cache-Control", '"private, no-cache"'),
    ("Vary", '"Cookie, Accept-Encoding"'),
    ("X-Request-Id", "5e1c2d9a-4b7f-4c1e-9a3b-2f6d8e7c1a0b"),
    ("Set-Cookie", '"theme=dark; Path=/; SameSite=Lax"'),
    ("X-Content-Type-Options", "nosniff"),
    ("Strict-Transport-Security", '"max-age=31536000"'),
)
APP_BODY_SIZE = 2048

# The upstream. `return` is the cheapest small answer nginx has. The upload location must read the
# whole body before answering, as an application would: `return` would answer first and discard the
# body afterwards, so `mirror_request_body` reads it, then the static handler's 405 for POST is
# turned into a small 200 by error_page. sendfile and open_file_cache keep the 64 KiB file cheap.
UPSTREAM_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp_paths}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  sendfile on;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  server {{
    listen {host}:{port};
    root {tmp}/www;
    location = /small {{ return 200 "hello from upstream\\n"; }}
    location = /64k {{ }}
    location = /app {{
      default_type "text/html; charset=utf-8";
{app_headers}
    }}
    location = /upload {{
      client_body_buffer_size 128k;
      mirror /_read_body;
      mirror_request_body on;
      error_page 405 =200 @uploaded;
    }}
    location @uploaded {{ return 200 "uploaded\\n"; }}
    location = /_read_body {{ internal; return 204; }}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

# nginx as a reverse proxy: upstream keep-alive, and buffers big enough that neither a 64 KiB
# response nor a 64 KiB upload spills to a temporary file (Debian's defaults would, which is disk
# I/O, not proxying).
NGINX_PROXY_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx-proxy.pid;
error_log {tmp}/nginx-proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp_paths}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  client_body_buffer_size 128k;
  proxy_buffer_size 16k;
  proxy_buffers 8 16k;
  proxy_busy_buffers_size 32k;
  upstream up {{
    server {host}:{upstream};
    keepalive 128;
    keepalive_requests 1000000000;
  }}
  server {{
    listen {host}:{port};
{tls_listen}    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
NGINX_TLS = """\
    listen {host}:{tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers {tls12};
    ssl_conf_command Ciphersuites {tls13};
"""

# HAProxy, one thread, upstream connections reused. Blue and green are two servers on the same
# upstream so that a flip through the runtime socket is the same operation as ours.
HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 4096
    stats socket {tmp}/haproxy.sock mode 600 level admin
    ssl-default-bind-ciphersuites {tls13}
    ssl-default-bind-ciphers {tls12}
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind {host}:{port}
{tls_bind}    default_backend be
backend be
    server blue {host}:{upstream}
    server green {host}:{upstream} disabled
"""

OURS_CONF = """\
listeners:
  active: {{host: {host}, port: {port}}}
  preview: {{host: {host}, port: {preview}}}
admin: {{host: {host}, port: {admin}, socket: "{socket}"}}
pools:
  blue: {{endpoints: ["{host}:{upstream}"]}}
  green: {{endpoints: ["{host}:{upstream}"]}}
routes: {{active: blue, preview: green}}
"""
# With TLS cases, ours terminates TLS on its preview listener (its pool is the same upstream): the same
# data plane and route lookup as the active listener, so one process serves both the plain and the TLS rows.
OURS_TLS = """\
listeners:
  active: {{host: {host}, port: {port}}}
  preview:
    host: {host}
    port: {preview}
    tls: {{certificates: [{{cert: "{cert}", key: "{key}"}}], ciphers: {tls12}}}
"""
OURS_ACCESS_LOG = 'access_log: {{path: "{path}", format: json}}\n'

WRK_SCRIPT = """\
{request}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK-RESULT requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""
WRK_UPLOAD = f"""\
wrk.method = "POST"
wrk.body = string.rep("x", {BODY_SIZE})
wrk.headers["Content-Type"] = "application/octet-stream"
"""
WRK_CLOSE = 'wrk.headers["Connection"] = "close"\n'
# What an API client posts (also `loadtest.hotpath --fields api-post`'s): its fields, a JSON body. wrk adds
# Host and Content-Length.
API_FIELDS = (
    ("User-Agent", "python-httpx/0.28.1"),
    ("Accept", "application/json"),
    ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"),
    ("Content-Type", "application/json"),
)
API_BODY = '{"order": 1042, "items": [{"sku": "A-17", "qty": 2}], "note": "leave at door"}'
WRK_RESULT = re.compile(
    r"WRK-RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+)",
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    port: int
    cpu_root: int  # the pid whose process tree is charged for the target's CPU
    flip: Callable[[], float] | None = None  # one flip; returns its latency in seconds
    tls_port: int | None = None  # its TLS listener, when TLS cases run
    access_log: Path | None = None  # ours-log's access log (emptied after each run, its lines counted)
    flip_http: Callable[[], float] | None = None  # ours: the same flip through the admin API's HTTP


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    cpu_us_per_req: float | None
    p50_us: float | None  # None: the client reports no latency (s_time)
    p99_us: float | None
    errors: int
    requests: int
    other_cores: float  # CPU used meanwhile by processes the bench did not start, in cores
    logged: int | None = None  # access-log lines written during the run (ours-log)
    user_us_per_req: float | None = None  # the part of `cpu_us_per_req` spent in user space (the rest: the kernel)


@dataclass(slots=True)
class FlipStats:
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    runs: list[Run] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    duration: int
    warmup: int
    connections: int
    cases: tuple[str, ...]
    targets: tuple[str, ...]
    flips: int
    flip_interval: float
    bluegreen: tuple[str, ...]


# --- processes -------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # Runs in the child before exec: if the bench is SIGKILLed (a CI timeout), the kernel sends
    # SIGTERM to its children, so no nginx or HAProxy outlives it.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Every long-running process the bench starts, each in its own process group."""

    def __init__(self, logdir: Path) -> None:
        self._logdir = logdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self._logdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._procs.append((name, proc, log))
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self._logdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        for _name, proc, log in reversed(self._procs):
            _stop(proc)
            log.close()
        self._procs.clear()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The whole group: nginx workers, our proxy's workers.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers whose leader has exited


def free_ports(count: int) -> list[int]:
    # Hold all sockets until every port is picked, so the same port is never handed out twice.
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]


def _unverified() -> ssl.SSLContext:
    # The bench's own checks reach a self-signed certificate on 127.0.0.1: encrypted, not verified.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connection(port: int, timeout: float, tls: bool) -> http.client.HTTPConnection:
    if tls:
        return http.client.HTTPSConnection(HOST, port, timeout=timeout, context=_unverified())
    return http.client.HTTPConnection(HOST, port, timeout=timeout)


def _http_status(port: int, path: str, timeout: float = 1.0, tls: bool = False) -> int:
    conn = _connection(port, timeout, tls)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_ready(
    procs: Processes, name: str, proc: subprocess.Popen[bytes], port: int, path: str, hits: int = 1, tls: bool = False
) -> None:
    """Wait until `hits` consecutive fresh connections get a 200 (several: each worker must be up)."""
    deadline = time.monotonic() + READY_TIMEOUT
    ok = 0
    while ok < hits:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not ready on port {port} after {READY_TIMEOUT:.0f} s:\n{procs.log_tail(name)}")
        try:
            ok = ok + 1 if _http_status(port, path, tls=tls) == 200 else 0
        except OSError:
            ok = 0
        if ok < hits:
            time.sleep(0.05)


# --- CPU accounting ------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(ppid, utime+stime+cutime+cstime, utime+cutime in ticks), or None if the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2 :].split()
    return int(fields[1]), sum(int(f) for f in fields[11:15]), int(fields[11]) + int(fields[13])


Snapshot = dict[int, tuple[int, int, int]]  # pid -> (ppid, CPU ticks, user-space CPU ticks)


def snapshot() -> Snapshot:
    """CPU ticks of every process on the machine."""
    return {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := _stat(e)) is not None}


def tree(snap: Snapshot, root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _ticks, _user) in snap.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in snap:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(before: Snapshot, after: Snapshot, pids: set[int], *, user: bool = False) -> float:
    """CPU `pids` used between the snapshots (`user`: in user space only)."""
    # A process born during the run is charged from zero; one that died was reaped into its parent's
    # cutime, so its CPU is still counted.
    zero = (0, 0, 0)
    i = 2 if user else 1
    return sum(after[p][i] - before.get(p, zero)[i] for p in pids) / _CLK_TCK


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def measure(
    root: int, duration: int, fn: Callable[[], tuple[str, str]], parse: Callable[[str, str], WrkResult] | None = None
) -> Run:
    """Run wrk through `fn`; charge `root`'s process tree with its CPU, and note what the rest of
    the machine used meanwhile (on a shared machine that is the noise in the figures)."""
    busy, before = busy_seconds(), snapshot()
    stdout, stderr = fn()
    after, busy = snapshot(), busy_seconds() - busy
    requests, seconds, p50, p99, errors = (parse or parse_wrk)(stdout, stderr)
    pids = tree(after, root)
    cpu = cpu_seconds(before, after, pids) / requests * 1e6 if requests else None
    user = cpu_seconds(before, after, pids, user=True) / requests * 1e6 if requests else None
    # Everything we started descends from this process (wrk is reaped into its cutime). The others are
    # the machine's busy time minus ours: summing their own ticks would overcount, since a child reaped
    # during the run brings its whole lifetime's CPU into its parent's cutime.
    mine = cpu_seconds(before, after, tree(after, os.getpid()))
    other_cores = max(0.0, busy - mine) / duration
    rps = requests / seconds if seconds else 0.0
    return Run(rps, cpu, p50, p99, errors, requests, other_cores, user_us_per_req=user)


# --- wrk --------------------------------------------------------------------------------------------------


def _lua(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_wrk_scripts(tmp: Path) -> dict[str, Path]:
    browser = "".join(f"wrk.headers[{_lua(name)}] = {_lua(value)}\n" for name, value in BROWSER_FIELDS)
    api = 'wrk.method = "POST"\n' + f"wrk.body = {_lua(API_BODY)}\n"
    api += "".join(f"wrk.headers[{_lua(name)}] = {_lua(value)}\n" for name, value in API_FIELDS)
    requests = {"get": "", "upload": WRK_UPLOAD, "browser": browser, "close": WRK_CLOSE, "api": api}
    scripts = {}
    for name, request in requests.items():
        path = tmp / f"wrk-{name}.lua"
        path.write_text(WRK_SCRIPT.format(request=request))
        scripts[name] = path
    return scripts


def wrk_argv(script: Path, port: int, path: str, connections: int, duration: int, tls: bool = False) -> list[str]:
    url = f"{'https' if tls else 'http'}://{HOST}:{port}{path}"
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]


WrkResult = tuple[int, float, float | None, float | None, int]  # requests, seconds, p50 µs, p99 µs, errors


def parse_wrk(stdout: str, stderr: str) -> WrkResult:
    match = WRK_RESULT.search(stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{stdout}\n{stderr}")
    requests, duration_us, p50, p99, errors = (int(g) for g in match.groups())
    return requests, duration_us / 1e6, float(p50), float(p99), errors


def run_case(target: Target, case: Case, scripts: dict[str, Path], connections: int, duration: int) -> Run:
    if case.client == "s_time":
        run = run_s_time(target, case, duration)
    else:
        run = run_wrk(target, case, scripts, connections, duration)
    if target.access_log is not None:
        run = dataclasses.replace(run, logged=_drain_log(target.access_log))
    return run


def _drain_log(path: Path) -> int:
    """Count the access log's lines and empty it (O_APPEND: the writer goes on at the new end)."""
    time.sleep(0.2)  # the writer thread's last batch
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    os.truncate(path, 0)
    return lines


def run_wrk(target: Target, case: Case, scripts: dict[str, Path], connections: int, duration: int) -> Run:
    port = target.tls_port if case.tls else target.port
    assert port is not None, f"{target.name} has no TLS listener"
    argv = wrk_argv(
        scripts[case.script], port, case.path, 1 if case.one_client else connections, duration, tls=case.tls
    )

    def wrk() -> tuple[str, str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, preexec_fn=_die_with_parent, check=False
        )
        return done.stdout, done.stderr

    return measure(target.cpu_root, duration, wrk)


S_TIME_RESULT = re.compile(r"^(\d+) connections in (\d+) real seconds, (\d+) bytes read per connection", re.M)


def s_time_argv(port: int, path: str, duration: int) -> list[str]:
    # -new: a full handshake per connection, never a resumed one. -www: one HTTP/1.0 request, read to the close.
    return [
        "openssl", "s_time", "-connect", f"{HOST}:{port}", "-new", "-www", path, "-time", str(duration),
        "-tls1_3", "-ciphersuites", TLS13_SUITE,
    ]  # fmt: skip


def parse_s_time(stdouts: Sequence[str], duration: int) -> WrkResult:
    """The connections of all s_time processes (each counts those completed in its `-time` seconds)."""
    total = errors = 0
    for out in stdouts:
        match = S_TIME_RESULT.search(out)
        if match is None:
            raise RuntimeError(f"openssl s_time printed no result:\n{out[-2000:]}")
        count, _seconds, per_conn = (int(g) for g in match.groups())
        total += count
        errors += out.count("ERROR") + (1 if per_conn == 0 else 0)  # a 0-byte answer: no response came
    return total, float(duration), None, None, errors


def run_s_time(target: Target, case: Case, duration: int) -> Run:
    """HANDSHAKE_CLIENTS `openssl s_time -new` in parallel: new TLS connections with full handshakes."""
    assert target.tls_port is not None, f"{target.name} has no TLS listener"
    argv = s_time_argv(target.tls_port, case.path, duration)
    outs: list[str] = []

    def clients() -> tuple[str, str]:
        procs = [
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=_die_with_parent,
            )
            for _ in range(HANDSHAKE_CLIENTS)
        ]
        try:
            outs.extend(p.communicate(timeout=duration + 30)[0] for p in procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        return "", ""

    return measure(target.cpu_root, duration, clients, lambda _o, _e: parse_s_time(outs, duration))


def negotiated(port: int) -> dict[str, str]:
    """What an OpenSSL client (as wrk's and s_time's) negotiates with a TLS listener: protocol, suite, group."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-alpn", "http/1.1"],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    out = done.stdout + done.stderr
    new = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)
    group = re.search(r"^(?:Server|Peer) Temp Key: ([^,\s]+)", out, re.M)
    alpn = re.search(r"^ALPN protocol: (\S+)", out, re.M)
    return {
        "protocol": new.group(1) if new else "?",
        "suite": new.group(2) if new else "?",
        "group": group.group(1) if group else "?",
        "alpn": alpn.group(1) if alpn else "?",
    }


def check_tls(targets: dict[str, Target]) -> dict[str, str]:
    """Every TLS listener negotiates the same protocol, suite and group, or the comparison is off."""
    seen = {t.name: negotiated(t.tls_port) for t in targets.values() if t.tls_port is not None}
    want = {"protocol": "TLSv1.3", "suite": TLS13_SUITE, "group": TLS_GROUP, "alpn": "http/1.1"}
    for name, got in seen.items():
        if got != want:
            raise RuntimeError(f"{name} negotiates {got}, the others are measured with {want}")
    return want if seen else {}


def make_certificate(tmp: Path) -> tuple[Path, Path, Path]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1: (cert, key, both in one file for HAProxy)."""
    cert, key, both = tmp / "tls-cert.pem", tmp / "tls-key.pem", tmp / "tls-both.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )  # fmt: skip
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    key.chmod(0o644)  # a throwaway key in the bench's own directory, readable by nginx's and HAProxy's users
    both.chmod(0o644)
    return cert, key, both


def run_flips(
    target: Target, flip: Callable[[], float], scripts: dict[str, Path], settings: Settings, stats: FlipStats
) -> None:
    """Saturate the target with wrk (small body) and `flip` it in a loop meanwhile."""
    argv = wrk_argv(scripts["get"], target.port, "/small", settings.connections, settings.duration)

    def wrk_with_flips() -> tuple[str, str]:
        wrk = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent
        )
        try:
            flip_while(target.name, flip, settings, stats, start=time.monotonic())
            return wrk.communicate(timeout=settings.duration + 30)
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()

    stats.runs.append(measure(target.cpu_root, settings.duration, wrk_with_flips))


def flip_while(name: str, flip: Callable[[], float], settings: Settings, stats: FlipStats, start: float) -> None:
    # Leave wrk a moment to open its connections, and stop before it winds down: flips count only
    # while the data plane is saturated.
    margin = min(0.25, settings.duration / 5)
    time.sleep(margin)
    end = start + settings.duration - margin
    flips = 0
    while flips < settings.flips and time.monotonic() < end:
        try:
            stats.latencies.append(flip())
        except (OSError, RuntimeError) as exc:
            stats.failed += 1
            print(f"  {name}: flip failed: {exc}", file=sys.stderr)
        flips += 1
        time.sleep(settings.flip_interval)


def ours_flipper(admin_port: int) -> Callable[[], float]:
    """A flip through the admin API, as a client would do it: a fresh connection per call."""
    state = {"active": json.loads(_admin_call(admin_port, "GET", "/api/v1/routes")[1])["active"]}

    def flip() -> float:
        body = json.dumps({"active": "green" if state["active"] == "blue" else "blue"})
        t0 = time.perf_counter()
        status, text = _admin_call(admin_port, "POST", "/api/v1/switch", body)
        elapsed = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"switch answered {status}: {text.strip()}")
        state["active"] = json.loads(text)["active"]
        return elapsed

    return flip


def socket_flipper(path: Path) -> Callable[[], float]:
    """The flip through ours' runtime socket (`admin.socket`): the same transport and shape of call as
    HAProxy's runtime socket below (connect, one command line, read the answer until the close)."""
    state = {"active": "blue"}

    def flip() -> float:
        new = "green" if state["active"] == "blue" else "blue"
        t0 = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(f"switch {new}\n".encode())
            s.shutdown(socket.SHUT_WR)  # one command: the proxy closes once it has answered
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        elapsed = time.perf_counter() - t0
        reply = json.loads(answer or b"{}")
        if reply.get("active") != new:
            raise RuntimeError(f"the runtime socket answered {answer.decode(errors='replace').strip()!r}")
        state["active"] = new
        return elapsed

    return flip


def _admin_call(port: int, method: str, path: str, body: str | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def haproxy_flipper(sock_path: Path) -> Callable[[], float]:
    """The same flip on HAProxy: one runtime-socket call that swaps which server takes traffic."""
    state = {"active": "blue"}

    def flip() -> float:
        new, old = ("green", "blue") if state["active"] == "blue" else ("blue", "green")
        command = f"set server be/{new} state ready; set server be/{old} state maint\n".encode()
        t0 = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(command)
            answer = b""
            while chunk := s.recv(4096):  # HAProxy closes after answering a non-interactive command
                answer += chunk
        elapsed = time.perf_counter() - t0
        if answer.strip():
            raise RuntimeError(f"HAProxy answered {answer.decode(errors='replace').strip()!r}")
        state["active"] = new
        return elapsed

    return flip


# --- starting the targets -----------------------------------------------------------------------------


def _temp_paths(tmp: Path) -> str:
    names = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    return " ".join(f"{n}_temp_path {tmp}/{n};" for n in names)


def default_bluegreen() -> list[str]:
    # Prefer the console script installed next to this interpreter; fall back to the module.
    exe = shutil.which("bluegreen", path=str(Path(sys.executable).parent)) or shutil.which("bluegreen")
    return [exe] if exe else [sys.executable, "-m", "bluegreen"]


def start_targets(
    procs: Processes, tmp: Path, names: Sequence[str], bluegreen: Sequence[str], tls: bool = False
) -> dict[str, Target]:
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read www/ and the temp paths
    (tmp / "www").mkdir()
    (tmp / "www" / "64k").write_bytes(os.urandom(BODY_SIZE))
    (tmp / "www" / "app").write_bytes((b"<p>" + b"order line " * 200)[:APP_BODY_SIZE])
    (tmp / "www" / "upload").write_text("the static handler must find a file to answer POST with 405\n")
    upstream_port, haproxy_port, nginx_port, haproxy_tls, nginx_tls, *ours_ports = free_ports(14)
    fmt: dict[str, Any] = {
        "host": HOST,
        "upstream": upstream_port,
        "temp_paths": _temp_paths(tmp),
        "tls13": TLS13_SUITE,
        "tls12": TLS12_SUITE,
    }
    cert, key, both = make_certificate(tmp) if tls else (None, None, None)

    conf = tmp / "upstream.conf"
    app_headers = "\n".join(f"      add_header {name} {value} always;" for name, value in APP_HEADERS)
    conf.write_text(UPSTREAM_CONF.format(tmp=tmp, port=upstream_port, app_headers=app_headers, **fmt))
    proc = procs.start("upstream", ["nginx", "-p", str(tmp), "-c", str(conf)])
    wait_ready(procs, "upstream", proc, upstream_port, "/small")
    targets = {"direct": Target("direct", upstream_port, proc.pid)} if "direct" in names else {}

    if "haproxy" in names:
        conf = tmp / "haproxy.cfg"
        tls_bind = f"    bind {HOST}:{haproxy_tls} ssl crt {both} alpn http/1.1\n" if tls else ""
        conf.write_text(HAPROXY_CONF.format(tmp=tmp, port=haproxy_port, tls_bind=tls_bind, **fmt))
        proc = procs.start("haproxy", ["haproxy", "-db", "-f", str(conf)])
        wait_ready(procs, "haproxy", proc, haproxy_port, "/small")
        if tls:
            wait_ready(procs, "haproxy", proc, haproxy_tls, "/small", tls=True)
        targets["haproxy"] = Target(
            "haproxy", haproxy_port, proc.pid, haproxy_flipper(tmp / "haproxy.sock"), haproxy_tls if tls else None
        )

    if "nginx" in names:
        conf = tmp / "nginx-proxy.conf"
        tls_listen = NGINX_TLS.format(tls_port=nginx_tls, cert=cert, key=key, **fmt) if tls else ""
        conf.write_text(NGINX_PROXY_CONF.format(tmp=tmp, port=nginx_port, tls_listen=tls_listen, **fmt))
        proc = procs.start("nginx", ["nginx", "-p", str(tmp), "-c", str(conf)])
        wait_ready(procs, "nginx", proc, nginx_port, "/small")
        if tls:
            wait_ready(procs, "nginx", proc, nginx_tls, "/small", tls=True)
        targets["nginx"] = Target("nginx", nginx_port, proc.pid, tls_port=nginx_tls if tls else None)

    # No admin token: the admin listener is on loopback, which the contract allows without one.
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_ADMIN_TOKEN"}
    ours = (("ours", 1, ours_ports[:3]), ("ours-2w", 2, ours_ports[3:6]), ("ours-log", 1, ours_ports[6:9]))
    for name, workers, (port, preview, admin) in ours:
        if name not in names:
            continue
        conf = tmp / f"{name}.yaml"
        text = OURS_CONF.format(port=port, preview=preview, admin=admin, socket=tmp / f"{name}.sock", **fmt)
        if tls:  # the preview listener terminates TLS (see OURS_TLS)
            listeners = OURS_TLS.format(port=port, preview=preview, cert=cert, key=key, **fmt)
            text = listeners + text.split("\n", 3)[3]
        log = tmp / f"{name}-access.log" if name == "ours-log" else None
        if log is not None:
            text += OURS_ACCESS_LOG.format(path=log)
        conf.write_text(text)
        argv = [*bluegreen, "proxy", "--config", str(conf), "--workers", str(workers)]
        proc = procs.start(name, argv, env)
        wait_ready(procs, name, proc, admin, "/healthz")
        wait_ready(procs, name, proc, port, "/small", hits=10 * workers)
        if tls:
            wait_ready(procs, name, proc, preview, "/small", hits=10 * workers, tls=True)
        flips = log is None  # ours-log measures the log, not flips
        targets[name] = Target(
            name,
            port,
            proc.pid,
            socket_flipper(tmp / f"{name}.sock") if flips else None,
            preview if tls else None,
            log,
            ours_flipper(admin) if flips and workers == 1 else None,
        )
    for target in targets.values():
        check_answers(target)
    return {n: targets[n] for n in names}


def check_answers(target: Target) -> None:
    """Each case answers 200 with the right body size, so no case benchmarks an error page."""
    upload = b"x" * BODY_SIZE
    for method, path, body, size in (
        ("GET", "/small", None, None),
        ("GET", "/64k", None, BODY_SIZE),
        ("GET", "/app", None, APP_BODY_SIZE),
        ("POST", "/upload", upload, None),
        ("POST", "/upload", API_BODY.encode(), None),
    ):
        for port, tls in ((target.port, False), (target.tls_port, True)):
            if port is not None:
                check_answer(target, port, tls, method, path, body, size)


def check_answer(
    target: Target, port: int, tls: bool, method: str, path: str, body: bytes | None, size: int | None
) -> None:
    conn = _connection(port, 10, tls)
    try:
        conn.request(method, path, body)
        resp = conn.getresponse()
        got = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or (size is not None and len(got) != size):
        scheme = "https" if tls else "http"
        raise RuntimeError(f"{target.name}: {method} {scheme} {path} answered {resp.status} with {len(got)} bytes")


# --- the benchmark ---------------------------------------------------------------------------------


Runs = dict[str, dict[str, list[Run]]]  # case -> target -> one run per round


def bench(settings: Settings, tmp: Path) -> tuple[Runs, dict[str, FlipStats], dict[str, str]]:
    """Runs, flips, and what the TLS listeners negotiate (empty without TLS cases)."""
    procs = Processes(tmp)
    tls = any(CASES[c].tls for c in settings.cases)
    try:
        targets = start_targets(procs, tmp, settings.targets, settings.bluegreen, tls=tls)
        negotiated = check_tls(targets) if tls else {}
        scripts = write_wrk_scripts(tmp)
        if settings.warmup:
            for target in targets.values():
                for warm in ("small", "tls-small") if tls and target.tls_port is not None else ("small",):
                    run_case(target, CASES[warm], scripts, settings.connections, settings.warmup)

        def applies(case: Case, target: Target) -> bool:
            return target.tls_port is not None or not case.tls

        runs: Runs = {c: {t.name: [] for t in targets.values() if applies(CASES[c], t)} for c in settings.cases}
        # Flip rows: each target's runtime socket, and ours' admin API over HTTP as `ours-http`.
        flippers: dict[str, tuple[Target, Callable[[], float]]] = {}
        for t in targets.values():
            if t.flip is not None:
                flippers[t.name] = (t, t.flip)
            if t.flip_http is not None:
                flippers[f"{t.name}-http"] = (t, t.flip_http)
        flips = {name: FlipStats() for name in flippers} if settings.flips else {}
        for rnd in range(1, settings.rounds + 1):
            for case_name in settings.cases:
                for target in targets.values():
                    if not applies(CASES[case_name], target):
                        continue
                    run = run_case(target, CASES[case_name], scripts, settings.connections, settings.duration)
                    runs[case_name][target.name].append(run)
                    _progress(rnd, settings.rounds, case_name, target.name, run)
            for name, stats in flips.items():
                target, flip = flippers[name]
                run_flips(target, flip, scripts, settings, stats)
                print(
                    f"[{rnd}/{settings.rounds}] flips {name:8} {len(stats.latencies)} so far, {stats.failed} failed",
                    file=sys.stderr,
                )
        return runs, flips, negotiated
    finally:
        procs.stop_all()


def _progress(rnd: int, rounds: int, case: str, target: str, run: Run) -> None:
    cpu = f"{run.cpu_us_per_req:.1f}" if run.cpu_us_per_req is not None else "-"
    user = f"{run.user_us_per_req:.1f}" if run.user_us_per_req is not None else "-"
    p50 = f"{run.p50_us / 1000:.3f}" if run.p50_us is not None else "-"
    p99 = f"{run.p99_us / 1000:.3f}" if run.p99_us is not None else "-"
    logged = f"  access log {run.logged} lines" if run.logged is not None else ""
    print(
        f"[{rnd}/{rounds}] {case:13} {target:8} {run.rps:9.0f} req/s  {cpu:>6} µs CPU/req ({user:>5} user)  "
        f"p50 {p50} ms  p99 {p99} ms  errors {run.errors}  other load {run.other_cores:.2f} cores{logged}",
        file=sys.stderr,
    )


# --- the report -----------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Nearest rank: with a few hundred flips, p99 is one of the slowest few, not an interpolation.
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def summarize(runs: Runs, flips: dict[str, FlipStats], negotiated: dict[str, str] | None = None) -> dict[str, Any]:
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    for case, by_target in runs.items():
        cases[case] = {}
        for target, rs in by_target.items():
            cases[case][target] = {
                "rps": _median([r.rps for r in rs]),
                "cpu_us_per_req": _median([r.cpu_us_per_req for r in rs]),
                "user_us_per_req": _median([r.user_us_per_req for r in rs]),
                "p50_us": _median([r.p50_us for r in rs]),
                "p99_us": _median([r.p99_us for r in rs]),
                "errors": sum(r.errors for r in rs),
                "requests": sum(r.requests for r in rs),
                "rounds": len(rs),
                "rps_runs": [round(r.rps) for r in rs],
            }
            if any(r.logged is not None for r in rs):
                cases[case][target]["logged"] = sum(r.logged or 0 for r in rs)
    flip_out: dict[str, dict[str, Any]] = {}
    for target, stats in flips.items():
        lat = sorted(stats.latencies)
        flip_out[target] = {
            "count": len(lat),
            "failed": stats.failed,
            "p50_ms": _percentile(lat, 50) * 1000 if lat else None,
            "p99_ms": _percentile(lat, 99) * 1000 if lat else None,
            "max_ms": lat[-1] * 1000 if lat else None,
            "rps": _median([r.rps for r in stats.runs]),
            "errors": sum(r.errors for r in stats.runs),
        }
    every_run = [r for by_target in runs.values() for rs in by_target.values() for r in rs]
    every_run += [r for stats in flips.values() for r in stats.runs]
    other = sorted(r.other_cores for r in every_run)
    noise = {"median_cores": statistics.median(other), "max_cores": other[-1]} if other else {}
    return {"cases": cases, "flips": flip_out, "other_load": noise, "tls": negotiated or {}}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}×" if value is not None and base else "-"


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def _ms(us: float | None) -> float | None:
    return us / 1000 if us is not None else None


CASE_HEADER = (
    "target",
    "req/s",
    "× HAProxy",
    "CPU µs/req",
    "× HAProxy",
    "of it user",
    "p50 ms",
    "p99 ms",
    "× HAProxy",
    "p50 added µs",
    "× HAProxy",
    "errors",
)
FLIP_HEADER = (
    "target",
    "flips",
    "p50 ms",
    "× HAProxy",
    "p99 ms",
    "× HAProxy",
    "max ms",
    "failed flips",
    "req/s meanwhile",
    "request errors",
)


def case_rows(rows: dict[str, dict[str, Any]]) -> list[list[str]]:
    hap = rows.get("haproxy", {})
    direct_p50 = rows.get("direct", {}).get("p50_us")

    def added(row: dict[str, Any]) -> float | None:
        return row["p50_us"] - direct_p50 if direct_p50 is not None and row["p50_us"] is not None else None

    hap_added = added(hap) if hap else None
    out = []
    for target, row in rows.items():
        add = added(row) if target != "direct" else None
        out.append(
            [
                target,
                _num(row["rps"], ".0f"),
                _ratio(row["rps"], hap.get("rps")),
                _num(row["cpu_us_per_req"], ".1f"),
                _ratio(row["cpu_us_per_req"], hap.get("cpu_us_per_req")),
                _num(row.get("user_us_per_req"), ".1f"),
                _num(_ms(row["p50_us"]), ".3f"),
                _num(_ms(row["p99_us"]), ".3f"),
                _ratio(row["p99_us"], hap.get("p99_us")),
                _num(add, ".0f"),
                _ratio(add, hap_added) if hap_added and hap_added > 0 else "-",
                str(row["errors"]),
            ]
        )
    return out


def flip_rows(flips: dict[str, dict[str, Any]]) -> list[list[str]]:
    hap = flips.get("haproxy", {})
    return [
        [
            target,
            str(f["count"]),
            _num(f["p50_ms"], ".2f"),
            _ratio(f["p50_ms"], hap.get("p50_ms")),
            _num(f["p99_ms"], ".2f"),
            _ratio(f["p99_ms"], hap.get("p99_ms")),
            _num(f["max_ms"], ".2f"),
            str(f["failed"]),
            _num(f["rps"], ".0f"),
            str(f["errors"]),
        ]
        for target, f in flips.items()
    ]


def log_lines(summary: dict[str, Any]) -> list[str]:
    """The access log's cost in each case where both ours and ours-log ran: ours-log against ours."""
    out = []
    for case, rows in summary["cases"].items():
        on, off = rows.get("ours-log"), rows.get("ours")
        if not on or not off or not on["rps"] or not off["rps"]:
            continue
        cpu = (
            f", CPU {on['cpu_us_per_req'] - off['cpu_us_per_req']:+.1f} µs/req"
            if on["cpu_us_per_req"] is not None and off["cpu_us_per_req"] is not None
            else ""
        )
        out.append(
            f"{case}: access log (json, to a file) costs {1 - on['rps'] / off['rps']:.1%} of throughput "
            f"(ours-log {on['rps']:.0f} vs ours {off['rps']:.0f} req/s{cpu}); {on.get('logged', 0)} lines logged."
        )
    return out


def tls_line(summary: dict[str, Any]) -> str:
    tls = summary.get("tls") or {}
    if not tls:
        return ""
    return (
        f"TLS: every target negotiates {tls['protocol']} {tls['suite']}, {tls['group']}, ALPN {tls['alpn']} "
        "(openssl s_client), with the same self-signed ECDSA P-256 certificate."
    )


def noise_line(summary: dict[str, Any]) -> str:
    noise = summary["other_load"]
    if not noise:
        return ""
    return (
        f"Processes the bench did not start used a median {noise['median_cores']:.2f} and at most "
        f"{noise['max_cores']:.2f} cores during the runs."
    )


def text_table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for row in rows:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def md_table(header: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def case_title(name: str, connections: int) -> str:
    case = CASES[name]
    if case.client == "s_time":
        return f"{name}: {case.title}; req/s are handshakes/s"
    scheme = " https" if case.tls else ""
    return f"{name}: {case.title} (wrk -t1 -c{1 if case.one_client else connections}{scheme})"


def report_text(summary: dict[str, Any], settings: Settings) -> str:
    parts = []
    for name, rows in summary["cases"].items():
        parts += [case_title(name, settings.connections), text_table(CASE_HEADER, case_rows(rows)), ""]
    if summary["flips"]:
        parts += [
            f"flip acknowledgement under full load (wrk -t1 -c{settings.connections}, small body)",
            text_table(FLIP_HEADER, flip_rows(summary["flips"])),
            "",
        ]
    parts += [line for line in (*log_lines(summary), tls_line(summary), noise_line(summary)) if line]
    return "\n".join(parts)


def report_markdown(summary: dict[str, Any], settings: Settings, env: dict[str, str], block: str = BLOCK) -> str:
    tls = f" {tls_line(summary)}" if summary.get("tls") else ""
    parts = [
        f"<!-- {block}:begin -->",
        f"Run {env['date']} on {env['cpu']} ({env['cores']} cores), Linux {env['kernel']}; "
        f"{env['wrk']}, {env['nginx']}, {env['haproxy']}, {env['openssl']}, Python {env['python']} "
        f"(data plane: {env['dataplane']}).",
        "",
        f"Command: `{env['command']}` — medians of {settings.rounds} interleaved rounds of "
        f"{settings.duration} s per target and case.{tls} {noise_line(summary)}",
        "",
    ]
    for name, rows in summary["cases"].items():
        parts += [f"### {case_title(name, settings.connections)}", "", md_table(CASE_HEADER, case_rows(rows)), ""]
    if summary["flips"]:
        parts += [
            f"### Flip acknowledgement under full load (wrk -t1 -c{settings.connections}, small body)",
            "",
            md_table(FLIP_HEADER, flip_rows(summary["flips"])),
            "",
        ]
    logs = log_lines(summary)
    if logs:
        parts += [*(f"- {line}" for line in logs), ""]
    parts.append(f"<!-- {block}:end -->")
    return "\n".join(parts) + "\n"


def write_markdown(path: Path, block: str, name: str = BLOCK) -> None:
    """Replace the block between the markers `name` when the file has them (so prose around it stays)."""
    mark_begin, mark_end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    begin, end = text.find(mark_begin), text.find(mark_end)
    if begin != -1 and end > begin:
        text = text[:begin] + block.rstrip("\n") + text[end + len(mark_end) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + block
    path.write_text(text)


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def environment(argv: Sequence[str], bluegreen: Sequence[str]) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = _first_line(["wrk", "-v"])
    nginx = _first_line(["nginx", "-v"]).removeprefix("nginx version: ")
    haproxy = _first_line(["haproxy", "-v"])
    dataplane = _first_line([*bluegreen, "proxy", "--version"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": os.uname().release,
        "wrk": " ".join(wrk.split()[:2]),
        "nginx": nginx,
        "haproxy": "HAProxy " + (haproxy.split() + ["?"] * 3)[2],
        "python": sys.version.split()[0],
        "openssl": _first_line(["openssl", "version"]).split(" (")[0],
        "dataplane": dataplane.partition("data plane: ")[2].removesuffix(")") or "?",
        "command": shlex.join(["python", "-m", "loadtest.bench", *argv]),
    }


# --- command line -------------------------------------------------------------------------------------


def _names(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (got {text!r})")
    return names


def parse_args(argv: Sequence[str]) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per target, not recorded")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c for all but latency-1c (default 64)")
    parser.add_argument(
        "--cases",
        type=lambda s: _names(s, tuple(CASES)),
        default=DEFAULT_CASES,
        help=f"default {','.join(DEFAULT_CASES)}; on request: {','.join(EXTRA_CASES)}; TLS: {','.join(TLS_CASES)}",
    )
    parser.add_argument("--tls", action="store_true", help="add the TLS cases to --cases")
    parser.add_argument(
        "--targets",
        type=lambda s: _names(s, TARGETS),
        default=DEFAULT_TARGETS,
        help=f"default {','.join(DEFAULT_TARGETS)}; ours-log (ours with a json access log) on request",
    )
    parser.add_argument("--flips", type=int, default=200, help="flips per flip run, 0 to skip (default 200)")
    parser.add_argument("--flip-interval", type=float, default=0.01, help="seconds between flips (default 0.01)")
    parser.add_argument(
        "--bluegreen", type=shlex.split, help="command that runs bluegreen (default: the installed `bluegreen`)"
    )
    parser.add_argument("--markdown", type=Path, help="write the tables to FILE (between the --block markers)")
    parser.add_argument(
        "--block", default=BLOCK, help=f"the markers' name in --markdown (default {BLOCK}: <!-- {BLOCK}:begin -->)"
    )
    parser.add_argument("--json", type=Path, help="write the medians to FILE as JSON")
    parser.add_argument("--smoke", action="store_true", help="everything once for 1 s: checks the bench runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.flips = 1, 1, 0, min(args.flips, 50)
    if args.rounds < 1 or args.duration < 1 or args.connections < 1 or args.warmup < 0 or args.flips < 0:
        parser.error("--rounds, --duration and --connections must be >= 1; --warmup and --flips >= 0")
    if not re.fullmatch(r"[a-z0-9-]+", args.block):
        parser.error("--block: lowercase letters, digits and dashes")
    cases = tuple(args.cases) + tuple(c for c in TLS_CASES if args.tls and c not in args.cases)
    settings = Settings(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        cases=cases,
        targets=args.targets,
        flips=args.flips,
        flip_interval=args.flip_interval,
        bluegreen=tuple(args.bluegreen or default_bluegreen()),
    )
    return settings, args


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM into an exception so the finally blocks stop every process we started.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings, args = parse_args(argv)
    missing = [tool for tool in ("wrk", "nginx", "haproxy", "openssl") if shutil.which(tool) is None]
    if missing:
        print(f"bench: not installed: {', '.join(missing)} (apt-get install wrk nginx haproxy)", file=sys.stderr)
        return 2
    env = environment(argv, settings.bluegreen)  # before the runs: the mode they ran in, not one after an edit
    if "reinstall" in env["dataplane"]:
        # Pure Python because a source changed after the install: not the build anyone means to measure.
        print(f"bench: the data plane would run {env['dataplane']} (or BLUEGREEN_PURE=1 to mean it)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-") as tmp:
        try:
            runs, flips, negotiated = bench(settings, Path(tmp))
        except RuntimeError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
    summary = summarize(runs, flips, negotiated)
    print(report_text(summary, settings))
    if args.markdown:
        write_markdown(args.markdown, report_markdown(summary, settings, env, args.block), args.block)
    if args.json:
        args.json.write_text(json.dumps({"env": env, **summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
