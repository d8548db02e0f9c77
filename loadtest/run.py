"""`bluegreen loadtest`: Locust, headless and in its own processes, against a proxy that flips under load.

Without `--target` it starts what it measures: `python -m loadtest.upstream` (pools blue and green, two
endpoints each plus one spare each for the replace-endpoints scenario; green answers late in the
slow-pool scenario) and `bluegreen proxy` with a temporary config, all on free 127.0.0.1 ports. Then
Locust runs `loadtest/locustfile.py` (one process, or a master and K workers), its output is echoed,
and the JSON summary the master wrote is printed as a table. Exit status 1 when any request failed,
any answer was stale, a flip failed, or Locust failed; 0 otherwise.

Locust is never imported here: it runs as `python -m locust` subprocesses. Every process started here
is stopped here (process groups, SIGTERM then SIGKILL), and every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadtest.bench import (
    HOST,
    Processes,
    Snapshot,
    _die_with_parent,
    _stop,
    _terminate,
    busy_seconds,
    cpu_seconds,
    default_bluegreen,
    free_ports,
    snapshot,
    tree,
    wait_ready,
)

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
ROOT = LOCUSTFILE.parents[1]
SCENARIOS = ("steady", "slow-pool", "replace-endpoints")

PROXY_CONF = """\
listeners:
  active: {{host: {host}, port: {active}}}
  preview: {{host: {host}, port: {preview}}}
admin: {{host: {host}, port: {admin}}}
pools:
  blue: {{endpoints: [{blue}]}}
  green: {{endpoints: [{green}]}}
routes: {{active: blue, preview: green}}
drain: {{timeout: 30s}}
"""


@dataclass(frozen=True, slots=True)
class Options:
    target: str | None
    admin: str | None
    preview: str | None
    users: int
    spawn_rate: float
    duration: float
    switch_every: float
    workers: int
    results: Path
    scenario: str
    rate: float
    preview_every: int
    proxy_workers: int
    slow_delay: float
    path: str
    quiet: bool


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    admin: str
    preview: str | None
    spares: dict[str, list[str]]
    pids: dict[str, int]  # processes started here, for CPU accounting: "proxy", "upstreams"


def start_proxy(procs: Processes, opts: Options) -> Target:
    """Upstreams (one process, six ports) and `bluegreen proxy` with a temporary config."""
    active, preview, admin, *up = free_ports(9)
    blue, green = up[:3], up[3:]
    argv = [sys.executable, "-m", "loadtest.upstream", "--serve", f"blue={','.join(map(str, blue))}"]
    argv += ["--serve", f"green={','.join(map(str, green))}"]
    if opts.scenario == "slow-pool":
        argv += ["--delay", f"green={opts.slow_delay}"]
    upstream = procs.start("upstream", argv)
    for port in up:
        wait_ready(procs, "upstream", upstream, port, opts.path)

    def eps(ports: list[int]) -> list[str]:
        return [f"{HOST}:{p}" for p in ports]

    conf = opts.results / "proxy.yaml"
    conf.write_text(
        PROXY_CONF.format(
            host=HOST,
            active=active,
            preview=preview,
            admin=admin,
            blue=", ".join(f'"{e}"' for e in eps(blue[:2])),
            green=", ".join(f'"{e}"' for e in eps(green[:2])),
        )
    )
    # No admin token: the admin listener is on loopback, which the contract allows without one.
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_ADMIN_TOKEN"}
    argv = [*default_bluegreen(), "proxy", "--config", str(conf), "--workers", str(opts.proxy_workers)]
    proc = procs.start("proxy", argv, env)
    wait_ready(procs, "proxy", proc, admin, "/healthz")
    wait_ready(procs, "proxy", proc, active, opts.path, hits=4 * opts.proxy_workers)
    wait_ready(procs, "proxy", proc, preview, opts.path, hits=4 * opts.proxy_workers)
    return Target(
        f"http://{HOST}:{active}",
        f"http://{HOST}:{admin}",
        f"http://{HOST}:{preview}",
        {"blue": eps(blue), "green": eps(green)},
        {"proxy": proc.pid, "upstreams": upstream.pid},
    )


def locust_argv(opts: Options, target: Target, summary: Path) -> list[str]:
    preview = target.preview if opts.preview_every > 0 else None
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    argv += ["-u", str(opts.users), "-r", f"{opts.spawn_rate:g}", "-t", f"{math.ceil(opts.duration)}s"]
    argv += ["--host", target.url, "--csv", str(opts.results / "locust"), "--exit-code-on-error", "1"]
    argv += ["--bg-admin", target.admin, "--bg-switch-every", f"{opts.switch_every:g}"]
    argv += ["--bg-scenario", opts.scenario, "--bg-path", opts.path, "--bg-rate", f"{opts.rate:g}"]
    argv += ["--bg-summary", str(summary), "--bg-spares", json.dumps(target.spares)]
    if preview:
        argv += ["--bg-preview", preview, "--bg-preview-every", str(opts.preview_every)]
    return argv


class CpuWindow:
    """CPU snapshots when Locust says all users are spawned and when its run time is up: the cores each part
    uses under full load, without Locust's start-up and shutdown (read by the echo thread from the log)."""

    BEGIN, END = b"All users spawned", b"run-time limit reached"

    def __init__(self) -> None:
        self.marks: dict[bytes, tuple[Snapshot, float, float]] = {}

    def see(self, line: bytes) -> None:
        for mark in (self.BEGIN, self.END):
            if mark in line and mark not in self.marks:
                self.marks[mark] = (snapshot(), busy_seconds(), time.monotonic())


def _echo(stream: IO[bytes], log: IO[bytes], quiet: bool, window: CpuWindow) -> None:
    for line in iter(stream.readline, b""):
        window.see(line)
        log.write(line)
        if not quiet:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()


def run_locust(procs: Processes, opts: Options, target: Target, summary: Path) -> tuple[int, dict[str, Any]]:
    """The master (or the one local process) in the foreground, its output echoed and kept in locust.log.
    Returns Locust's exit status and the cores each part used over the run."""
    argv = locust_argv(opts, target, summary)
    if opts.workers > 0:
        (port,) = free_ports(1)
        worker = [*argv, "--worker", "--master-host", HOST, "--master-port", str(port)]
        argv += ["--master", "--master-bind-host", HOST, "--master-bind-port", str(port)]
        argv += ["--expect-workers", str(opts.workers), "--expect-workers-max-wait", "30"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    window = CpuWindow()
    workers: list[int] = []
    with (opts.results / "locust.log").open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert proc.stdout is not None
        echo = threading.Thread(target=_echo, args=(proc.stdout, log, opts.quiet, window), daemon=True)
        echo.start()
        try:
            workers += [procs.start(f"locust-worker-{i}", worker, env).pid for i in range(opts.workers)]
            # Bounded: the run, the workers' wait, the ramp-up, the final reports and the shutdown.
            code = proc.wait(timeout=opts.duration + opts.users / max(opts.spawn_rate, 0.1) + 120)
        except subprocess.TimeoutExpired:
            print("bluegreen loadtest: Locust did not finish in time; stopped it", file=sys.stderr)
            code = 124
        finally:
            _stop(proc)
            echo.join(timeout=5)
    if window.BEGIN not in window.marks or window.END not in window.marks:
        return code, {}
    before, busy0, t0 = window.marks[window.BEGIN]
    after, busy1, t1 = window.marks[window.END]
    return code, cpu_cores(before, after, busy1 - busy0, t1 - t0, target.pids, workers)


def cpu_cores(
    before: Snapshot,
    after: Snapshot,
    busy: float,
    wall: float,
    pids: dict[str, int],
    workers: list[int],
) -> dict[str, Any]:
    """Cores used on average under full load, per part. "locust"/"locust_master" is what our process tree used
    beyond the other parts (the master and this command, which only echoes); "others" is the rest of the
    machine: the noise on a shared box."""
    mine = cpu_seconds(before, after, tree(after, os.getpid()))
    parts = {name: cpu_seconds(before, after, tree(after, pid)) for name, pid in pids.items()}
    per_worker = [cpu_seconds(before, after, tree(after, pid)) for pid in workers]
    master = mine - sum(parts.values()) - sum(per_worker)
    out: dict[str, Any] = {name: round(v / wall, 2) for name, v in parts.items()}
    out["locust_master" if workers else "locust"] = round(master / wall, 2)
    if workers:
        out["locust_workers"] = [round(v / wall, 2) for v in per_worker]
    out["others"] = round(max(0.0, busy - mine) / wall, 2)
    out["window_s"] = round(wall, 1)
    return out


def _ms(d: dict[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return "-" if v is None else f"{v:.2f}"


def print_table(s: dict[str, Any], opts: Options) -> None:
    c, flips = s["counters"], s["flips"]
    print()
    print(
        f"bluegreen loadtest: {opts.scenario}, {opts.users} users, {opts.duration:g} s, "
        f"flip every {opts.switch_every:g} s, {opts.workers or 'no'} Locust workers -> {opts.results}"
    )
    ack, after_start, after_ack = flips["ack"], flips["first_new_color_after_start"], flips["first_new_color_after_ack"]
    target = f" (target {s['target_rps']:g})" if s["target_rps"] else ""
    non2xx = sum(c["http_errors"].values())
    warning = s["locust"]["cpu_warning"]
    rows = [
        ("requests", f"{s['requests']}", f"{s['throughput_rps']} req/s{target}"),
        (
            "failures",
            f"{s['failures']}",
            f"connection errors {c['connection_errors']}, non-2xx {non2xx}, color mismatch {c['mismatched']}",
        ),
        ("stale after ack", f"{s['stale']}", f"unjudged (before the first routes read) {s['unjudged']}"),
        (
            "flips",
            f"{flips['count']}",
            f"errors {flips['errors']}, ack p50 {_ms(ack, 'p50_ms')} ms p99 {_ms(ack, 'p99_ms')} ms"
            f" max {_ms(ack, 'max_ms')} ms",
        ),
        (
            "first new color",
            "",
            f"after flip start p50 {_ms(after_start, 'p50_ms')} ms p99 {_ms(after_start, 'p99_ms')} ms;"
            f" after ack p50 {_ms(after_ack, 'p50_ms')} ms",
        ),
        (
            "colors seen",
            " ".join(s["colors_seen"]),
            f"send rate after a flip / mean {flips['start_rate_after_flip_vs_mean']}",
        ),
        ("CPU warning", "yes" if warning else "no", "Locust over 90 % of a core: figures invalid" if warning else ""),
    ]
    for name, value, note in rows:
        print(f"  {name:<18}{value:>10}  {note}")
    print(f"  {'latency (ms)':<24}{'count':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'p99.9':>9}{'max':>9}")
    for key, h in s["latency"].items():
        cells = "".join(f"{_ms(h, k):>9}" for k in ("p50_ms", "p95_ms", "p99_ms", "p99.9_ms", "max_ms"))
        print(f"  {key:<24}{h['count']:>9}{cells}")
    cores = s["cpu_cores"]
    if cores:
        print("  cores used        " + ", ".join(f"{k} {v}" for k, v in cores.items()))
    if s["upstream_connections"]:
        conns = s["upstream_connections"]
        per_flip = f" ({sum(conns.values()) / flips['count']:.1f} per flip)" if flips["count"] else ""
        print("  upstream conns    " + ", ".join(f"{k} {v}" for k, v in conns.items()) + per_flip)
    for example in s["stale_examples"][:5]:
        print(f"  STALE: {example}")
    for example in flips["errors_examples"][:5]:
        print(f"  FLIP ERROR: {example}")


def upstream_connections(log: Path) -> dict[str, int] | None:
    """Connections each color's upstreams accepted (printed by loadtest.upstream when it stops)."""
    if not log.exists():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("connections"):
            return {k: int(v) for k, _, v in (item.partition("=") for item in line.split()[1:])}
    return None


def verdict(s: dict[str, Any], locust_code: int, opts: Options) -> list[str]:
    reasons = []
    if locust_code != 0:
        reasons.append(f"Locust exited with {locust_code}")
    if s["failures"]:
        reasons.append(f"{s['failures']} requests failed")
    if s["stale"]:
        reasons.append(f"{s['stale']} stale answers after an acknowledged flip")
    if s["flips"]["errors"]:
        reasons.append(f"{s['flips']['errors']} flip errors")
    if s["counters"]["dropped"]:
        reasons.append(f"{s['counters']['dropped']} records dropped")
    if opts.switch_every > 0 and not s["flips"]["count"]:
        reasons.append("no flip was acknowledged")
    if not s["requests"]:
        reasons.append("no request succeeded")
    return reasons


def run(opts: Options) -> int:
    # A relative path is the caller's: Locust runs with ROOT as its working directory (so a checkout imports).
    opts = dataclasses.replace(opts, results=opts.results.absolute())
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # SIGTERM runs the finally below: no process outlives us
    opts.results.mkdir(parents=True, exist_ok=True)
    summary = opts.results / "summary.json"
    summary.unlink(missing_ok=True)
    procs = Processes(opts.results)
    try:
        if opts.target:
            admin = opts.admin or os.environ.get("BLUEGREEN_ADMIN", "http://127.0.0.1:8090")
            target = Target(opts.target.rstrip("/"), admin.rstrip("/"), opts.preview, {}, {})
        else:
            target = start_proxy(procs, opts)
        code, cores = run_locust(procs, opts, target, summary)
    except RuntimeError as exc:  # a process that would not start: its log tail is in the message
        print(f"bluegreen loadtest: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
    if not summary.exists():
        print(f"bluegreen loadtest: Locust exited with {code} and wrote no summary (see {opts.results}/locust.log)")
        return 1
    s = json.loads(summary.read_text())
    s["cpu_cores"] = cores
    s["upstream_connections"] = upstream_connections(opts.results / "upstream.log")
    summary.write_text(json.dumps(s, indent=2))
    print_table(s, opts)
    reasons = verdict(s, code, opts)
    if reasons:
        print(f"bluegreen loadtest: FAILED: {'; '.join(reasons)}", file=sys.stderr)
        return 1
    print(f"bluegreen loadtest: ok (CSV and summary.json in {opts.results})")
    return 0


def locust_available() -> bool:
    return shutil.which("locust") is not None or _module_available("locust")


def _module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
