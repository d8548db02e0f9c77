"""How the proxy's cost grows with the work: idle connections, endpoints, pools, concurrency, workers.

    python -m loadtest.scaling [--sections idle,endpoints,pools,connections,workers] [--rounds N]
                               [--duration S] [--flips N] [--markdown FILE] [--json FILE] [--smoke]

Sections (each a small table; medians over `--rounds` interleaved rounds):

- **idle**: resident memory of `bluegreen proxy` (supervisor and worker) per idle keep-alive client
  connection, at 1k, 10k and 50k connections. Each connection makes one request, then stays open.
  Above ~20k connections the clients bind source addresses 127.0.0.2, 127.0.0.3, ... (with
  IP_BIND_ADDRESS_NO_PORT) so the ephemeral ports towards the one listener do not run out; the
  open-file limit is raised to what the count needs (this process's children inherit it).
- **endpoints** and **pools**: the small case's req/s and CPU per request (wrk alone), then the flip
  acknowledgement under the same load (`POST /api/v1/switch` between pools blue and green), with
  2, 100 and 1,000 endpoints per pool (2 pools), and with 1, 10 and 100 pools of 2 endpoints each.
  Every endpoint is its own port on one nginx upstream (one worker), so a pool of 1,000 endpoints
  is 1,000 upstream addresses the proxy round-robins over.
- **connections**: p50/p99 of the small case as wrk's concurrent connections go 64, 1,024 and
  8,192, ours (1 worker) beside HAProxy (1 thread) and nginx (1 worker); their connection limits
  are raised above 8,192 so that none of them queues connections in the kernel.
- **workers**: the small case with 1 and 2 workers (and HAProxy), first sharing both cores with wrk
  and the upstream as `loadtest.bench` does, then pinned with `taskset`: wrk and the upstream on
  CPU 0, the proxy on CPU 1.

The processes, wrk's output, CPU accounting and the flip clients come from `loadtest.bench`.
Everything binds 127.0.0.x, lives in a temporary directory, is bounded in time, and every process
started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import multiprocessing.process
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from loadtest import bench

HOST = bench.HOST
SECTIONS = ("idle", "endpoints", "pools", "connections", "workers")
IDLE_COUNTS = (1_000, 10_000, 50_000)
ENDPOINT_COUNTS = (2, 100, 1_000)
POOL_COUNTS = (1, 10, 100)
CONNECTION_COUNTS = (64, 1_024, 8_192)
CONNECTION_TARGETS = ("haproxy", "nginx", "ours")
PER_PROCESS = 15_000  # idle connections per client process and per proxy worker (each has one fd per connection)
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the source port at connect, per destination
PROXY_CPU, LOAD_CPU = 1, 0  # the workers section's pinning

UPSTREAM_CONF = """\
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  {temp_paths}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  server {{
{listens}
    location = /small {{ return 200 "hello from upstream\\n"; }}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

OURS_CONF = """\
listeners:
  active: {{host: {host}, port: {port}}}
  preview: {{host: {host}, port: {preview}}}
admin: {{host: {host}, port: {admin}}}
limits: {{max_connections: {max_connections}}}
pools:
{pools}
routes: {routes}
"""


# HAProxy and nginx as `loadtest.bench` runs them (one thread, one worker, upstream keep-alive), with
# connection limits above the 8,192 concurrent clients of the connections section, so that none of the
# three queues clients in the kernel's accept backlog.
HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 9500
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
    default_backend be
backend be
    server blue {host}:{upstream}
"""

NGINX_PROXY_CONF = """\
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {tmp}/nginx-proxy.pid;
error_log {tmp}/nginx-proxy-error.log warn;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  {temp_paths}
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  upstream up {{
    server {host}:{upstream};
    keepalive 128;
    keepalive_requests 1000000000;
  }}
  server {{
    listen {host}:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


# --- processes ------------------------------------------------------------------------------------------


def raise_nofile(needed: int) -> int:
    """Raise this process's open-file limit (children inherit it) to `needed` if it can; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if want > hard:
        with contextlib.suppress(ValueError, OSError):  # root may raise the hard limit up to fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def pin(root: int, cpus: set[int]) -> None:
    """Set the CPU affinity of every thread of `root`'s process tree."""
    for pid in bench.tree(bench.snapshot(), root):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)


def start_upstream(procs: bench.Processes, tmp: Path, ports: Sequence[int]) -> int:
    """One nginx (one worker) listening on every port in `ports`; returns its pid."""
    tmp.chmod(0o755)  # nginx's worker runs unprivileged and must read the temp paths
    listens = "\n".join(f"    listen {HOST}:{p};" for p in ports)
    conf = tmp / "upstream.conf"
    conf.write_text(
        UPSTREAM_CONF.format(
            tmp=tmp,
            nofile=20_000,
            connections=19_000,
            temp_paths=bench._temp_paths(tmp),
            listens=listens,
        )
    )
    proc = procs.start("upstream", ["nginx", "-p", str(tmp), "-c", str(conf)])
    for port in (ports[0], ports[-1]):
        bench.wait_ready(procs, "upstream", proc, port, "/small")
    return proc.pid


@dataclass(frozen=True, slots=True)
class Ours:
    name: str
    port: int
    admin: int
    pid: int
    flip: Callable[[], float] | None


def ours_config(ports: Sequence[int], pools: dict[str, Sequence[int]], max_connections: int = 20_000) -> str:
    names = list(pools)
    lines = [f"  {name}: {{endpoints: [{', '.join(f'{HOST}:{p}' for p in eps)}]}}" for name, eps in pools.items()]
    routes = f"{{active: {names[0]}, preview: {names[1]}}}" if len(names) > 1 else f"{{active: {names[0]}}}"
    port, preview, admin = ports
    return OURS_CONF.format(
        host=HOST,
        port=port,
        preview=preview,
        admin=admin,
        max_connections=max_connections,
        pools="\n".join(lines),
        routes=routes,
    )


def start_ours(
    procs: bench.Processes,
    tmp: Path,
    name: str,
    config: str,
    ports: Sequence[int],
    bluegreen: Sequence[str],
    workers: int = 1,
    prefix: Sequence[str] = (),
) -> Ours:
    conf = tmp / f"{name}.yaml"
    conf.write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_ADMIN_TOKEN"}  # loopback admin: no token
    argv = [*prefix, *bluegreen, "proxy", "--config", str(conf), "--workers", str(workers)]
    proc = procs.start(name, argv, env)
    bench.wait_ready(procs, name, proc, ports[2], "/healthz")
    bench.wait_ready(procs, name, proc, ports[0], "/small", hits=10 * workers)
    flips = "preview" in config.split("routes:", 1)[1]
    return Ours(name, ports[0], ports[2], proc.pid, bench.ours_flipper(ports[2]) if flips else None)


def start_haproxy(procs: bench.Processes, tmp: Path, port: int, upstream: int, prefix: Sequence[str] = ()) -> int:
    conf = tmp / "haproxy.cfg"
    conf.write_text(HAPROXY_CONF.format(host=HOST, port=port, upstream=upstream))
    proc = procs.start("haproxy", [*prefix, "haproxy", "-db", "-f", str(conf)])
    bench.wait_ready(procs, "haproxy", proc, port, "/small")
    return proc.pid


def start_nginx_proxy(procs: bench.Processes, tmp: Path, port: int, upstream: int) -> int:
    conf = tmp / "nginx-proxy.conf"
    conf.write_text(
        NGINX_PROXY_CONF.format(tmp=tmp, host=HOST, port=port, upstream=upstream, temp_paths=bench._temp_paths(tmp))
    )
    proc = procs.start("nginx", ["nginx", "-p", str(tmp), "-c", str(conf)])
    bench.wait_ready(procs, "nginx", proc, port, "/small")
    return proc.pid


# --- wrk and flips ----------------------------------------------------------------------------------------


def run_wrk(
    scripts: dict[str, Path],
    root: int,
    port: int,
    connections: int,
    duration: int,
    prefix: Sequence[str] = (),
    during: Callable[[float], None] | None = None,
) -> bench.Run:
    """wrk on the small case (`-t1`), its CPU charged to `root`'s tree; `during(start)` runs meanwhile."""
    argv = [*prefix, *bench.wrk_argv(scripts["get"], port, "/small", connections, duration)]

    def wrk() -> tuple[str, str]:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=bench._die_with_parent,
        )
        try:
            if during is not None:
                during(time.monotonic())
            return proc.communicate(timeout=duration + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    return bench.measure(root, duration, wrk)


@dataclass(slots=True)
class FlipLog:
    latencies: list[float] = field(default_factory=list)
    failed: int = 0


def flips_during(
    flip: Callable[[], float], log: FlipLog, duration: int, count: int, interval: float
) -> Callable[[float], None]:
    """Flip every `interval` while wrk runs (after its first 0.25 s, until 0.25 s before its end)."""

    def during(start: float) -> None:
        margin = min(0.25, duration / 5)
        time.sleep(margin)
        end = start + duration - margin
        done = 0
        while done < count and time.monotonic() < end:
            try:
                log.latencies.append(flip())
            except (OSError, RuntimeError) as exc:
                log.failed += 1
                print(f"  flip failed: {exc}", file=sys.stderr)
            done += 1
            time.sleep(interval)

    return during


# --- idle connections ---------------------------------------------------------------------------------


class _Upstream(asyncio.Protocol):
    """Answers every request head `200 ok` (the idle section's upstream, in this process)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class _Client(asyncio.Protocol):
    """Sends one request, notes the answer, then stays open and idle."""

    REQUEST = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"

    def __init__(self, answered: asyncio.Future[None]) -> None:
        self.answered = answered
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        cast(asyncio.Transport, transport).write(self.REQUEST)

    def data_received(self, data: bytes) -> None:
        if not self.answered.done() and data.endswith(b"ok"):
            self.answered.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(ConnectionError("closed before the answer"))


def rss_kib(root: int) -> int:
    """Resident memory of `root`'s process tree, in KiB."""
    total = 0
    for pid in bench.tree(bench.snapshot(), root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def _open_idle(port: int, count: int, source: str, held: list[asyncio.Transport]) -> None:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(256)

    async def one() -> None:
        async with sem:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
                sock.setblocking(False)
                await loop.sock_connect(sock, (HOST, port))
            except BaseException:
                sock.close()
                raise
            answered: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(lambda: _Client(answered), sock=sock)
            held.append(transport)
            await answered

    await asyncio.gather(*(one() for _ in range(count)))


def hold_idle(port: int, count: int, source: str, pipe: Connection) -> None:
    """A client process: open `count` idle connections from `source`, say so, hold them until told to close."""

    async def run() -> None:
        held: list[asyncio.Transport] = []
        try:
            async with asyncio.timeout(240):
                await _open_idle(port, count, source, held)
            pipe.send("opened")
            await asyncio.to_thread(pipe.recv)
        finally:
            for transport in held:
                transport.abort()

    try:
        asyncio.run(run())
    except Exception as exc:
        pipe.send(f"failed: {exc!r}")


def idle_round(tmp: Path, count: int, hold: float, bluegreen: Sequence[str]) -> dict[str, float]:
    """Start a proxy, open `count` idle keep-alive connections through it, return its RSS before and after.

    Every process here has a hard limit of open files (20,000 on the shared machine, not raisable without
    CAP_SYS_RESOURCE): the clients are split over processes of at most PER_PROCESS connections, each from
    its own source address (127.0.0.2, ...), and the proxy gets as many workers as that needs.
    """
    ports = bench.free_ports(3)
    procs = bench.Processes(tmp)
    clients = math.ceil(count / PER_PROCESS)
    workers = clients

    async def run() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Upstream, HOST, 0, backlog=1024)
        up = server.sockets[0].getsockname()[1]
        config = ours_config(ports, {"blue": [up], "green": [up]}, max_connections=count + 1000)
        children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        try:
            proxy = await asyncio.to_thread(start_ours, procs, tmp, "ours", config, ports, bluegreen, workers)
            await asyncio.sleep(0.5)
            before = rss_kib(proxy.pid)
            started = time.monotonic()
            spawn = multiprocessing.get_context("spawn")
            for i in range(clients):
                share = count // clients + (1 if i < count % clients else 0)
                mine, theirs = spawn.Pipe()
                child = spawn.Process(target=hold_idle, args=(proxy.port, share, f"127.0.0.{2 + i}", theirs))
                child.start()
                children.append((child, mine))
            for _child, pipe in children:
                if not await asyncio.to_thread(pipe.poll, 240):
                    raise RuntimeError("idle clients did not open their connections within 240 s")
                said = pipe.recv()
                if said != "opened":
                    raise RuntimeError(f"idle client {said}")
            opened = time.monotonic() - started
            await asyncio.sleep(hold)
            after = rss_kib(proxy.pid)
        finally:
            for _process, pipe in children:
                with contextlib.suppress(OSError):
                    pipe.send("close")
            for process, _pipe in children:
                await asyncio.to_thread(process.join, 30)
                if process.is_alive():
                    process.kill()
            await asyncio.to_thread(procs.stop_all)
            server.close()
        return {"before_mib": before / 1024, "after_mib": after / 1024, "open_seconds": opened, "workers": workers}

    return asyncio.run(run())


def section_idle(settings: Settings, tmp: Path) -> dict[str, Any]:
    counts = settings.idle_counts
    limit = raise_nofile(PER_PROCESS + 5_000)
    rows: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for rnd in range(1, settings.rounds + 1):
        for n in counts:
            folder = tmp / f"{rnd}-{n}"
            folder.mkdir()
            result = idle_round(folder, n, settings.hold, settings.bluegreen)
            rows[n].append(result)
            grown = result["after_mib"] - result["before_mib"]
            print(
                f"[{rnd}/{settings.rounds}] idle {n:6} connections: RSS {result['before_mib']:.1f} -> "
                f"{result['after_mib']:.1f} MiB ({grown * 1024 / n:.2f} KiB each; opened in "
                f"{result['open_seconds']:.1f} s)",
                file=sys.stderr,
            )
    out = {}
    for n, results in rows.items():
        per = [(r["after_mib"] - r["before_mib"]) * 1024 / n for r in results]
        out[str(n)] = {
            "kib_per_connection": statistics.median(per),
            "runs_kib_per_connection": per,
            "before_mib": statistics.median(r["before_mib"] for r in results),
            "after_mib": statistics.median(r["after_mib"] for r in results),
            "workers": results[0]["workers"],
        }
    return {"nofile": limit, "rows": out}


# --- endpoints and pools ------------------------------------------------------------------------------


def shapes(settings: Settings) -> dict[str, dict[str, int]]:
    """name -> {pools, endpoints per pool} for the endpoints and pools sections."""
    out = {}
    if "endpoints" in settings.sections:
        out.update({f"endpoints={e}": {"pools": 2, "endpoints": e} for e in settings.endpoint_counts})
    if "pools" in settings.sections:
        out.update({f"pools={p}": {"pools": p, "endpoints": 2} for p in settings.pool_counts})
    return out


def section_shapes(settings: Settings, tmp: Path) -> dict[str, Any]:
    wanted = shapes(settings)
    needed = sum(s["pools"] * s["endpoints"] for s in wanted.values())
    raise_nofile(needed + 70_000)
    procs = bench.Processes(tmp)
    try:
        upstream_ports = bench.free_ports(needed)
        start_upstream(procs, tmp, upstream_ports)
        scripts = bench.write_wrk_scripts(tmp)
        targets: dict[str, Ours] = {}
        taken = 0
        for name, shape in wanted.items():
            pools: dict[str, Sequence[int]] = {}
            for i in range(shape["pools"]):
                pool = ("blue", "green")[i] if i < 2 else f"p{i}"
                pools[pool] = upstream_ports[taken : taken + shape["endpoints"]]
                taken += shape["endpoints"]
            ports = bench.free_ports(3)
            targets[name] = start_ours(procs, tmp, name, ours_config(ports, pools), ports, settings.bluegreen)
        for target in targets.values():
            if target.flip is not None:  # the first flip probes the target's never-checked endpoints
                target.flip()
                target.flip()
            if settings.warmup:
                run_wrk(scripts, target.pid, target.port, settings.connections, settings.warmup)
        runs: dict[str, list[bench.Run]] = {n: [] for n in targets}
        flip_runs: dict[str, list[bench.Run]] = {n: [] for n in targets}
        flips = {n: FlipLog() for n in targets}
        for rnd in range(1, settings.rounds + 1):
            for name, target in targets.items():
                run = run_wrk(scripts, target.pid, target.port, settings.connections, settings.duration)
                runs[name].append(run)
                line = f"[{rnd}/{settings.rounds}] {name:15} {run.rps:8.0f} req/s {run.cpu_us_per_req or 0:6.1f} µs/req"
                if target.flip is not None:
                    during = flips_during(
                        target.flip, flips[name], settings.duration, settings.flips, settings.flip_interval
                    )
                    flip_run = run_wrk(
                        scripts, target.pid, target.port, settings.connections, settings.duration, during=during
                    )
                    flip_runs[name].append(flip_run)
                    lat = sorted(flips[name].latencies)
                    line += f"  flips {len(lat)} p50 {bench._percentile(lat, 50) * 1000:.2f} ms" if lat else ""
                print(f"{line}  other load {run.other_cores:.2f} cores", file=sys.stderr)
    finally:
        procs.stop_all()
    out = {}
    for name, shape in wanted.items():
        lat = sorted(flips[name].latencies)
        out[name] = {
            **shape,
            "rps": bench._median([r.rps for r in runs[name]]),
            "cpu_us_per_req": bench._median([r.cpu_us_per_req for r in runs[name]]),
            "p99_us": bench._median([r.p99_us for r in runs[name]]),
            "errors": sum(r.errors for r in runs[name] + flip_runs[name]),
            "flips": len(lat),
            "failed_flips": flips[name].failed,
            "flip_p50_ms": bench._percentile(lat, 50) * 1000 if lat else None,
            "flip_p99_ms": bench._percentile(lat, 99) * 1000 if lat else None,
            "rps_during_flips": bench._median([r.rps for r in flip_runs[name]]),
            "other_cores": bench._median([r.other_cores for r in runs[name] + flip_runs[name]]),
        }
    return out


# --- concurrency ------------------------------------------------------------------------------------------


def section_connections(settings: Settings, tmp: Path) -> dict[str, Any]:
    raise_nofile(20_000)  # HAProxy's maxconn 9,500 needs 2 fds each
    procs = bench.Processes(tmp)
    try:
        upstream, haproxy, nginx, *ours_ports = bench.free_ports(6)
        start_upstream(procs, tmp, [upstream])
        scripts = bench.write_wrk_scripts(tmp)
        roots: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
        if "haproxy" in settings.connection_targets:
            roots["haproxy"] = (haproxy, start_haproxy(procs, tmp, haproxy, upstream))
        if "nginx" in settings.connection_targets:
            roots["nginx"] = (nginx, start_nginx_proxy(procs, tmp, nginx, upstream))
        if "ours" in settings.connection_targets:
            config = ours_config(ours_ports, {"blue": [upstream], "green": [upstream]})
            ours = start_ours(procs, tmp, "ours", config, ours_ports, settings.bluegreen)
            roots["ours"] = (ours.port, ours.pid)
        if settings.warmup:
            for port, pid in roots.values():
                run_wrk(scripts, pid, port, settings.connections, settings.warmup)
        runs: dict[str, dict[str, list[bench.Run]]] = {
            str(c): {t: [] for t in roots} for c in settings.connection_counts
        }
        for rnd in range(1, settings.rounds + 1):
            for c in settings.connection_counts:
                for name, (port, pid) in roots.items():
                    run = run_wrk(scripts, pid, port, c, settings.duration)
                    runs[str(c)][name].append(run)
                    print(
                        f"[{rnd}/{settings.rounds}] -c{c:<5} {name:8} {run.rps:8.0f} req/s  p50 {_ms(run.p50_us)} ms  "
                        f"p99 {_ms(run.p99_us)} ms  errors {run.errors}  other load {run.other_cores:.2f} cores",
                        file=sys.stderr,
                    )
                    time.sleep(1)  # let the closed connections leave their CPU work behind
    finally:
        procs.stop_all()
    return {c: {t: _summary(rs) for t, rs in by.items()} for c, by in runs.items()}


def _summary(rs: list[bench.Run]) -> dict[str, Any]:
    return {
        "rps": bench._median([r.rps for r in rs]),
        "cpu_us_per_req": bench._median([r.cpu_us_per_req for r in rs]),
        "p50_us": bench._median([r.p50_us for r in rs]),
        "p99_us": bench._median([r.p99_us for r in rs]),
        "errors": sum(r.errors for r in rs),
        "other_cores": bench._median([r.other_cores for r in rs]),
        "runs_rps": [r.rps for r in rs],
    }


# --- workers ----------------------------------------------------------------------------------------------


def section_workers(settings: Settings, tmp: Path) -> dict[str, Any]:
    if len(os.sched_getaffinity(0)) < 2:
        raise RuntimeError("the workers section needs 2 CPUs to pin the load and the proxy apart")
    raise_nofile(20_000)  # HAProxy's maxconn 9,500 needs 2 fds each
    procs = bench.Processes(tmp)
    both = set(os.sched_getaffinity(0))
    try:
        upstream, haproxy, *ports = bench.free_ports(8)
        up_pid = start_upstream(procs, tmp, [upstream])
        scripts = bench.write_wrk_scripts(tmp)
        roots: dict[str, tuple[int, int]] = {"haproxy": (haproxy, start_haproxy(procs, tmp, haproxy, upstream))}
        for name, workers, p in (("ours", 1, ports[:3]), ("ours-2w", 2, ports[3:])):
            config = ours_config(p, {"blue": [upstream], "green": [upstream]})
            target = start_ours(procs, tmp, name, config, p, settings.bluegreen, workers=workers)
            roots[name] = (target.port, target.pid)
        modes = ("shared", "pinned")
        runs: dict[str, dict[str, list[bench.Run]]] = {m: {t: [] for t in roots} for m in modes}
        for rnd in range(0 if settings.warmup else 1, settings.rounds + 1):
            for mode in modes:
                pinned = mode == "pinned"
                pin(up_pid, {LOAD_CPU} if pinned else both)
                for _name, (_port, pid) in roots.items():
                    pin(pid, {PROXY_CPU} if pinned else both)
                prefix = ["taskset", "-c", str(LOAD_CPU)] if pinned else []
                for name, (port, pid) in roots.items():
                    duration = settings.duration if rnd else settings.warmup
                    run = run_wrk(scripts, pid, port, settings.connections, duration, prefix=prefix)
                    if not rnd:
                        continue  # warm-up round
                    runs[mode][name].append(run)
                    print(
                        f"[{rnd}/{settings.rounds}] {mode:6} {name:8} {run.rps:8.0f} req/s "
                        f"{run.cpu_us_per_req or 0:6.1f} µs/req  p99 {_ms(run.p99_us)} ms  "
                        f"other load {run.other_cores:.2f} cores",
                        file=sys.stderr,
                    )
    finally:
        procs.stop_all()
    return {m: {t: _summary(rs) for t, rs in by.items()} for m, by in runs.items()}


# --- the report -------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def _ms(us: float | None) -> str:
    return _num(us / 1000 if us is not None else None, ".2f")


Table = tuple[str, str, list[str], list[list[str]]]  # section, title, header, rows


def tables(result: dict[str, Any]) -> list[Table]:
    out: list[Table] = []
    if "idle" in result:
        rows = [
            [
                f"{int(n):,}",
                str(int(r["workers"])),
                _num(r["before_mib"], ".1f"),
                _num(r["after_mib"], ".1f"),
                _num(r["kib_per_connection"], ".2f"),
                " / ".join(f"{v:.2f}" for v in r["runs_kib_per_connection"]),
            ]
            for n, r in result["idle"]["rows"].items()
        ]
        header = ["idle connections", "workers", "RSS before MiB", "RSS after MiB", "KiB per connection", "runs"]
        title = "Memory per idle keep-alive connection (proxy RSS: supervisor and workers)"
        out.append(("idle", title, header, rows))
    for key, title in (("endpoints", "Endpoints per pool (2 pools)"), ("pools", "Pools (2 endpoints each)")):
        rows = [
            [
                str(r["endpoints"] if key == "endpoints" else r["pools"]),
                _num(r["rps"], ".0f"),
                _num(r["cpu_us_per_req"], ".1f"),
                _ms(r["p99_us"]),
                str(r["flips"]) if r["flips"] else "n/a",
                _num(r["flip_p50_ms"], ".2f"),
                _num(r["flip_p99_ms"], ".2f"),
                _num(r["rps_during_flips"], ".0f"),
                str(r["errors"]),
            ]
            for name, r in result.get("shapes", {}).items()
            if name.startswith(key + "=")
        ]
        if rows:
            header = [
                key,
                "req/s",
                "CPU µs/req",
                "p99 ms",
                "flips",
                "flip p50 ms",
                "flip p99 ms",
                "req/s while flipping",
                "errors",
            ]
            out.append((key, title + ": small case, wrk -t1 -c64, then flips under the same load", header, rows))
    if "connections" in result:
        rows = []
        for c, by in result["connections"].items():
            hap = by.get("haproxy", {})
            for target, r in by.items():
                ratio = f"{r['p99_us'] / hap['p99_us']:.2f}×" if hap.get("p99_us") and r["p99_us"] else "-"
                rows.append(
                    [
                        f"{int(c):,}",
                        target,
                        _num(r["rps"], ".0f"),
                        _ms(r["p50_us"]),
                        _ms(r["p99_us"]),
                        ratio,
                        str(r["errors"]),
                    ]
                )
        header = ["connections", "target", "req/s", "p50 ms", "p99 ms", "p99 × HAProxy", "errors"]
        out.append(("connections", "Concurrent connections: small case, wrk -t1 -cN", header, rows))
    if "workers" in result:
        rows = []
        for mode, by in result["workers"].items():
            one = by.get("ours", {}).get("rps")
            for target, r in by.items():
                ratio = f"{r['rps'] / one:.2f}×" if one and target.startswith("ours") else "-"
                rows.append(
                    [
                        mode,
                        target,
                        _num(r["rps"], ".0f"),
                        ratio,
                        _num(r["cpu_us_per_req"], ".1f"),
                        _ms(r["p99_us"]),
                        " / ".join(f"{v:.0f}" for v in r["runs_rps"]),
                    ]
                )
        header = ["placement", "target", "req/s", "× 1 worker", "CPU µs/req", "p99 ms", "runs req/s"]
        title = "Workers: small case, wrk -t1 -c64; pinned = wrk and upstream on CPU 0, the proxy on CPU 1"
        out.append(("workers", title, header, rows))
    return out


def report_text(result: dict[str, Any]) -> str:
    parts = []
    for _section, title, header, rows in tables(result):
        parts += [title, bench.text_table(header, rows), ""]
    return "\n".join(parts)


def markers(section: str) -> tuple[str, str]:
    return f"<!-- scaling-{section}:begin -->", f"<!-- scaling-{section}:end -->"


def report_markdown(result: dict[str, Any], settings: Settings) -> dict[str, str]:
    """One block per section, each between its own markers, so that one section can be re-run alone."""
    env = result["env"]
    blocks = {}
    for section, title, header, rows in tables(result):
        begin, end = markers(section)
        noise = other_load(result, section)
        blocks[section] = "\n".join(
            [
                begin,
                f"#### {title}",
                "",
                bench.md_table(header, rows),
                "",
                f"Run {env['date']} on {env['cpu']} ({env['cores']} cores), Linux {env['kernel']}; {env['wrk']}, "
                f"{env['nginx']}, {env['haproxy']}, Python {env['python']}; data plane {env['dataplane']}. "
                f"Command: `{env['command']}`; medians of {settings.rounds} rounds"
                + (f" of {settings.duration} s per run" if section != "idle" else "")
                + (
                    f"; processes this run did not start used a median {noise:.2f} cores meanwhile."
                    if noise is not None
                    else "."
                ),
                end,
            ]
        )
    return blocks


def write_markdown(path: Path, blocks: dict[str, str]) -> None:
    """Replace each section's block between its markers when the file has them, else append it."""
    text = path.read_text() if path.exists() else ""
    for section, block in blocks.items():
        begin_mark, end_mark = markers(section)
        begin, end = text.find(begin_mark), text.find(end_mark)
        if begin != -1 and end > begin:
            text = text[:begin] + block + text[end + len(end_mark) :]
        else:
            text = (text.rstrip("\n") + "\n\n" if text else "") + block + "\n"
    path.write_text(text)


def other_load(result: dict[str, Any], section: str) -> float | None:
    """Median cores used by processes this run did not start, over the section's runs (None for idle)."""
    if section == "idle":
        return None
    if section in ("endpoints", "pools"):
        values = [r["other_cores"] for n, r in result.get("shapes", {}).items() if n.startswith(section + "=")]
    else:
        values = [r["other_cores"] for by in result.get(section, {}).values() for r in by.values()]
    return statistics.median(values) if values else None


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def environment(bluegreen: Sequence[str]) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in line
            ),
            "?",
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": os.uname().release,
        "wrk": " ".join(_first_line(["wrk", "-v"]).split()[:2]),
        "nginx": _first_line(["nginx", "-v"]).removeprefix("nginx version: "),
        "haproxy": "HAProxy " + (_first_line(["haproxy", "-v"]).split() + ["?"] * 3)[2],
        "python": sys.version.split()[0],
        "dataplane": dataplane_mode(bluegreen),
    }


def dataplane_mode(bluegreen: Sequence[str]) -> str:
    try:
        done = subprocess.run([*bluegreen, "proxy", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = done.stdout + done.stderr
    return text.split("data plane:", 1)[1].strip(" )\n") if "data plane:" in text else "?"


# --- command line ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    sections: tuple[str, ...]
    rounds: int
    duration: int
    warmup: int
    connections: int
    flips: int
    flip_interval: float
    hold: float
    idle_counts: tuple[int, ...]
    endpoint_counts: tuple[int, ...]
    pool_counts: tuple[int, ...]
    connection_counts: tuple[int, ...]
    connection_targets: tuple[str, ...]
    bluegreen: tuple[str, ...]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _names(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or any(n not in allowed for n in names):
        raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (got {text!r})")
    return names


def parse_args(argv: Sequence[str]) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m loadtest.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=lambda s: _names(s, SECTIONS), default=SECTIONS)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run (default 4)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unrecorded warm-up per target")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c of the endpoints/pools/workers runs")
    parser.add_argument("--flips", type=int, default=200, help="flips per flip run (default 200)")
    parser.add_argument("--flip-interval", type=float, default=0.01, help="seconds between flips (default 0.01)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds idle connections are held before measuring")
    parser.add_argument("--idle", type=_ints, default=IDLE_COUNTS, help="idle connection counts")
    parser.add_argument("--endpoints", type=_ints, default=ENDPOINT_COUNTS, help="endpoints per pool")
    parser.add_argument("--pools", type=_ints, default=POOL_COUNTS, help="pool counts")
    parser.add_argument("--concurrency", type=_ints, default=CONNECTION_COUNTS, help="wrk -c of the connections runs")
    parser.add_argument(
        "--connection-targets", type=lambda s: _names(s, CONNECTION_TARGETS), default=CONNECTION_TARGETS
    )
    parser.add_argument("--bluegreen", type=shlex.split, help="command that runs bluegreen (default: installed)")
    parser.add_argument("--markdown", type=Path, help="write the tables to FILE (between scaling markers)")
    parser.add_argument("--json", type=Path, help="write the medians to FILE as JSON")
    parser.add_argument("--smoke", action="store_true", help="every section once, small and short (a few seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.flips, args.hold = 1, 1, 0, 10, 0.2
        args.idle, args.endpoints, args.pools, args.concurrency = (50,), (2, 5), (1, 3), (8,)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.flips < 0:
        parser.error("--rounds and --duration must be >= 1; --warmup and --flips >= 0")
    settings = Settings(
        sections=args.sections,
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        flips=args.flips,
        flip_interval=args.flip_interval,
        hold=args.hold,
        idle_counts=args.idle,
        endpoint_counts=args.endpoints,
        pool_counts=args.pools,
        connection_counts=args.concurrency,
        connection_targets=args.connection_targets,
        bluegreen=tuple(args.bluegreen or bench.default_bluegreen()),
    )
    return settings, args


def run(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bluegreen-scaling-") as tmp:
        for section, fn in (
            ("idle", section_idle),
            ("shapes", section_shapes),
            ("connections", section_connections),
            ("workers", section_workers),
        ):
            wanted = ("endpoints", "pools") if section == "shapes" else (section,)
            if any(s in settings.sections for s in wanted):
                folder = Path(tmp) / section
                folder.mkdir()
                result[section] = fn(settings, folder)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings, args = parse_args(argv)
    missing = [tool for tool in ("wrk", "nginx", "haproxy", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"scaling: not installed: {', '.join(missing)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, bench._terminate)
    try:
        result = run(settings)
    except RuntimeError as exc:
        print(f"scaling: {exc}", file=sys.stderr)
        return 1
    env = environment(settings.bluegreen)
    command = shlex.join(["python", "-m", "loadtest.scaling", *argv])
    result = {"env": {**env, "command": command}, **result}
    print(report_text(result))
    if args.markdown:
        write_markdown(args.markdown, report_markdown(result, settings))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
