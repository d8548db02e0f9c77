"""Locust users for the hot switching path: load on the active (and preview) listener while a switcher flips.

    python -m locust -f loadtest/locustfile.py --headless -u 20 -r 20 -t 60s --host http://127.0.0.1:8080 \
        --bg-admin http://127.0.0.1:8090 --bg-switch-every 0.5 --bg-summary results/summary.json

(`bluegreen loadtest` builds this command line, starts the proxy and upstreams, and reads the summary.)

- `BlueGreenUser` (a FastHttpUser) requests `--bg-path` on the active listener, every `--bg-preview-every`-th
  request on the preview listener, and records for each answer its start and end time and the color
  that served it (`x-served-by-color`). Connection errors and non-2xx answers are separate failures;
  each success is named by its color in Locust's table (`active /color [blue]`), so the per-color
  latency percentiles are Locust's own.
- The switcher is one greenlet on the master (or the local runner), never on a worker: it flips the live
  color through the admin API every `--bg-switch-every` seconds and logs each flip's start and ack.
  Flips appear in Locust's table as `FLIP` entries (the ack latency, the first new-color response).
- Workers ship their records to the master with each stats report (`report_to_master`, every 3 s and a
  final one at quit); the master judges them against the flip log as they arrive and drops them
  (`loadtest/flipcheck.py`), so memory stays bounded. A stale answer becomes a `STALE` failure.
- At quit the master writes the JSON summary (`--bg-summary`) and exits non-zero on any stale answer,
  flip error or lost record. Timestamps are wall-clock (`time.time()`): the same clock in every process
  on one host; workers on other machines need synchronized clocks (NTP), or skew shows up as stale.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event
from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.runners import MasterRunner, WorkerRunner

from loadtest.flipcheck import ACTIVE, PREVIEW, FlipJudge

SCENARIOS = ("steady", "slow-pool", "replace-endpoints")
MAX_BUFFER = 1_000_000  # records a worker may hold between two reports (3 s) before it drops them
MAX_STALE_EVENTS = 100  # STALE entries fired into Locust's stats; the JSON has the exact count


class StaleResponse(Exception):
    pass


class FlipFailed(Exception):
    pass


# --- per-process state ------------------------------------------------------------------------------------


class Recorder:
    """Records of this process not yet judged, and its failure counters (merged on the master)."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float, str, int]] = []
        self.counters: dict[str, Any] = {"connection_errors": 0, "http_errors": {}, "mismatched": 0, "dropped": 0}

    def add(self, t_start: float, t_end: float, color: str, role: int) -> None:
        if len(self.records) >= MAX_BUFFER:
            self.counters["dropped"] += 1
            return
        self.records.append((t_start, t_end, color, role))

    def take(self) -> tuple[list[tuple[float, float, str, int]], dict[str, Any]]:
        records, counters = self.records, self.counters
        self.records = []
        self.counters = {"connection_errors": 0, "http_errors": {}, "mismatched": 0, "dropped": 0}
        return records, counters


RECORDER = Recorder()
EVENTS: Any = events  # Locust's event hooks are untyped; one Any keeps mypy strict elsewhere


class Master:
    """What only the master (or the local runner) holds: the flip log, the judge and the merged counters."""

    def __init__(self, options: Any) -> None:
        every = float(options.bg_switch_every)
        self.options = options
        self.judge = FlipJudge(
            max_flips=int(options.bg_max_flips),
            expected_interval=1 / options.bg_rate if options.bg_rate > 0 else None,
            near_window=min(0.1, every / 2) if every > 0 else 0.1,
        )
        self.counters: dict[str, Any] = {"connection_errors": 0, "http_errors": {}, "mismatched": 0, "dropped": 0}
        self.stop = Event()
        self.spawned = Event()  # flips begin once every user runs: a flip into a half-spawned load proves little
        self.greenlet: gevent.Greenlet | None = None
        self.stale_events = 0
        self.workers: set[str] = set()  # workers that reported records (runner.clients is empty by quit time)

    def merge(self, env: Any, records: list[Any], counters: dict[str, Any]) -> None:
        before = self.judge.stale
        self.judge.judge(records)
        for key in ("connection_errors", "mismatched", "dropped"):
            self.counters[key] += int(counters.get(key, 0))
        for code, n in counters.get("http_errors", {}).items():
            self.counters["http_errors"][str(code)] = self.counters["http_errors"].get(str(code), 0) + int(n)
        for _ in range(min(self.judge.stale - before, MAX_STALE_EVENTS - self.stale_events)):
            self.stale_events += 1
            env.events.request.fire(
                request_type="STALE",
                name="served by the old color after the ack",
                response_time=0,
                response_length=0,
                exception=StaleResponse(self.judge.stale_examples[-1] if self.judge.stale_examples else "stale"),
            )


MASTER: Master | None = None


# --- options -------------------------------------------------------------------------------------------------


def _options(parser: Any) -> None:
    group = parser.add_argument_group("bluegreen")
    group.add_argument("--bg-admin", default="http://127.0.0.1:8090", help="the proxy's admin API")
    group.add_argument("--bg-switch-every", type=float, default=0.5, help="seconds between flips (0: no flips)")
    group.add_argument("--bg-scenario", choices=SCENARIOS, default="steady")
    group.add_argument("--bg-preview", default="", help="the preview listener's URL (empty: active only)")
    group.add_argument("--bg-preview-every", type=int, default=5, help="every N-th request of a user on preview")
    group.add_argument("--bg-path", default="/color", help="the path every user requests")
    group.add_argument("--bg-rate", type=float, default=0.0, help="requests/s per user (0: closed loop, no wait)")
    group.add_argument("--bg-summary", default="", help="write the JSON summary here (master/local)")
    group.add_argument("--bg-max-flips", type=int, default=20_000, help="stop flipping after this many flips")
    group.add_argument("--bg-spares", default="{}", help='JSON {"pool": ["host:port", ...]}: extra endpoints')


# --- the users -------------------------------------------------------------------------------------------------


class BlueGreenUser(FastHttpUser):
    """One closed-loop user (or paced, with --bg-rate) on the active listener, some requests on preview."""

    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.path: str = opts.bg_path
        self.every: int = max(int(opts.bg_preview_every), 1)
        self.interval: float = 1 / opts.bg_rate if opts.bg_rate > 0 else 0.0
        # A random phase: Locust starts a batch of users at one instant, and paced users that stay in step send
        # in bursts, so a flip would wait for the next burst before any request could see it.
        self.next_at = time.monotonic() + random.uniform(0, self.interval)
        self.n = 0
        self.preview: FastHttpSession | None = None
        if opts.bg_preview:
            self.preview = FastHttpSession(
                base_url=opts.bg_preview,
                request_event=self.environment.events.request,
                user=self,
                network_timeout=self.network_timeout,
                connection_timeout=self.connection_timeout,
            )

    def wait_time(self) -> float:
        # Paced like constant_throughput: no catching up after a slow request, so missed sends are the
        # coordinated omission that the summary's corrected histogram puts back.
        if not self.interval:
            return 0.0
        now = time.monotonic()
        self.next_at = max(self.next_at + self.interval, now)
        return self.next_at - now

    @task
    def hit(self) -> None:
        self.n += 1
        role = PREVIEW if self.preview is not None and self.n % self.every == 0 else ACTIVE
        client = self.preview if role == PREVIEW and self.preview is not None else self.client
        label = f"{'preview' if role == PREVIEW else 'active'} {self.path}"
        t_start = time.time()
        with client.get(self.path, name=label, catch_response=True) as resp:
            t_end = time.time()
            status = resp.status_code or 0
            if not status:  # no HTTP answer at all: refused, reset, timed out (ErrorResponse carries .error)
                err = getattr(resp, "error", None) or resp.request_meta.get("exception")
                RECORDER.counters["connection_errors"] += 1
                resp.failure(f"connection error: {type(err).__name__}: {err}")
                return
            if not 200 <= status < 300:
                codes = RECORDER.counters["http_errors"]
                codes[str(status)] = codes.get(str(status), 0) + 1
                resp.failure(f"HTTP {status}")
                return
            color = resp.headers.get("x-served-by-color") if resp.headers else None
            if not color or resp.content != f'"{color}"'.encode():
                # the body comes from the upstream: it must be the pool the proxy's header names
                RECORDER.counters["mismatched"] += 1
                resp.failure(f"color header {color!r} vs body {resp.content[:40]!r}")
                return
            resp.request_meta["name"] = f"{label} [{color}]"
            resp.success()
        RECORDER.add(t_start, t_end, color, role)


# --- the switcher (master or local runner only) ---------------------------------------------------------------


class Admin:
    """A small blocking admin client: under gevent's monkey patching it only blocks its own greenlet."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        token = os.environ.get("BLUEGREEN_ADMIN_TOKEN")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        for attempt in (1, 2):  # one retry on a fresh connection: the kept-alive one may have been closed
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self.conn.request(method, path, None if body is None else json.dumps(body), self.headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2 or method == "POST":  # never resend a flip: it may have been applied
                    raise
                continue
            return resp.status, json.loads(data) if data else None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _fire(env: Any, name: str, seconds: float, error: str | None = None) -> None:
    env.events.request.fire(
        request_type="FLIP",
        name=name,
        response_time=seconds * 1000,
        response_length=0,
        exception=FlipFailed(error) if error else None,
    )


def switcher(env: Any, master: Master) -> None:
    opts = master.options
    admin = Admin(opts.bg_admin)
    judge = master.judge
    try:
        status, routes = admin.call("GET", "/api/v1/routes")
        if status != 200:
            raise FlipFailed(f"GET /api/v1/routes: {status} {routes}")
        judge.set_initial(routes["active"], routes.get("preview"), time.time())
        if opts.bg_switch_every <= 0:
            return
        status, data = admin.call("GET", "/api/v1/pools")
        endpoints: dict[str, list[str]] = {p["name"]: [e["address"] for e in p["endpoints"]] for p in data["pools"]}
        spares: dict[str, list[str]] = json.loads(opts.bg_spares or "{}")
        candidates = {n: list(dict.fromkeys(endpoints.get(n, []) + spares.get(n, []))) for n in endpoints}
        live, idle = routes["active"], routes.get("preview")
        if idle is None:
            idle = next((n for n in endpoints if n != live), None)
        if idle is None:
            raise FlipFailed("no second pool to flip to")
        while not master.spawned.is_set() and not master.stop.is_set():  # bounded by the run time (stop)
            master.spawned.wait(0.1)
        n = 0
        next_at = time.monotonic()
        while not master.stop.is_set() and n < opts.bg_max_flips:
            n += 1
            if opts.bg_scenario == "replace-endpoints":
                # Replace the endpoints of the live pool (under load) and of the pool about to go live.
                for pool in (live, idle):
                    pool_eps = candidates.get(pool) or []
                    if not pool_eps:
                        continue
                    size = max(1, len(pool_eps) - 1)
                    chosen = [pool_eps[(n + i) % len(pool_eps)] for i in range(size)]
                    t0 = time.time()
                    status, body = admin.call("PUT", f"/api/v1/pools/{pool}", {"endpoints": chosen})
                    env.events.request.fire(
                        request_type="ADMIN",
                        name="PUT /api/v1/pools/{name}",
                        response_time=(time.time() - t0) * 1000,
                        response_length=0,
                        exception=None if status in (200, 201) else FlipFailed(f"PUT {pool}: {status} {body}"),
                    )
            flip = judge.flip_started(idle, live, time.time())
            if flip is None:
                break
            try:
                status, body = admin.call("POST", "/api/v1/switch", {"active": idle})
            except (OSError, http.client.HTTPException) as exc:
                status, body = 0, f"{type(exc).__name__}: {exc}"
            t_ack = time.time()
            if status == 200 and isinstance(body, dict) and body.get("active") == idle:
                judge.flip_acked(flip, t_ack)
                _fire(env, "POST /api/v1/switch (ack)", t_ack - flip.started)
                live, idle = idle, live
            else:
                judge.flip_failed(flip, f"switch to {idle}: {status} {body}")
                _fire(env, "POST /api/v1/switch (ack)", t_ack - flip.started, f"{status} {body}")
            next_at += opts.bg_switch_every
            master.stop.wait(max(0.0, next_at - time.monotonic()))
        if opts.bg_scenario == "replace-endpoints":  # leave a --target proxy with the endpoints it had
            for pool, eps in endpoints.items():
                if eps:
                    admin.call("PUT", f"/api/v1/pools/{pool}", {"endpoints": eps})
    except Exception as exc:  # reported as a flip error: the run must fail, not hang or pass
        error = f"switcher: {type(exc).__name__}: {exc}"
        judge.switcher_errors.append(error)
        _fire(env, "switcher", 0.0, error)
    finally:
        admin.close()


# --- wiring -----------------------------------------------------------------------------------------------------


def _flush_local(env: Any) -> None:
    while True:  # the local runner judges its own records; killed at quit
        gevent.sleep(0.5)
        if MASTER is not None:
            records, counters = RECORDER.take()
            MASTER.merge(env, records, counters)


def _on_init(environment: Any, **_kw: Any) -> None:
    global MASTER
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def _report(client_id: str, data: dict[str, Any]) -> None:
            records, counters = RECORDER.take()
            data["bg_records"] = records
            data["bg_counters"] = counters

        EVENTS.report_to_master.add_listener(_report)
        return
    MASTER = Master(environment.parsed_options)
    if isinstance(runner, MasterRunner):

        def _worker_report(client_id: str, data: dict[str, Any]) -> None:
            if MASTER is not None and "bg_records" in data:
                MASTER.workers.add(client_id)
                MASTER.merge(environment, data["bg_records"], data["bg_counters"])

        EVENTS.worker_report.add_listener(_worker_report)

    elif runner is not None:
        gevent.spawn(_flush_local, environment)


def _on_test_start(environment: Any, **_kw: Any) -> None:
    if MASTER is None or MASTER.greenlet is not None:
        return
    MASTER.greenlet = gevent.spawn(switcher, environment, MASTER)


def _on_spawning_complete(user_count: int, **_kw: Any) -> None:
    if MASTER is not None:
        MASTER.spawned.set()


def _on_test_stopping(environment: Any, **_kw: Any) -> None:
    if MASTER is not None:
        MASTER.stop.set()


def _on_quitting(environment: Any, **_kw: Any) -> None:
    if MASTER is None:
        return
    MASTER.stop.set()
    if MASTER.greenlet is not None:
        MASTER.greenlet.join(timeout=15)  # let an in-flight flip finish and be logged
        MASTER.greenlet.kill(block=True, timeout=5)
    records, counters = RECORDER.take()  # the local runner's last records (users are stopped by now)
    MASTER.merge(environment, records, counters)
    summary = build_summary(environment, MASTER)
    for flip in MASTER.judge.flips:
        if flip.first_new is not None and flip.acked is not None:
            _fire(environment, "first new-color response after flip start", flip.first_new - flip.started)
    print(report(summary), flush=True)
    if getattr(MASTER.options, "csv_prefix", None):
        # Locust's CSV writer rewrites the files once a second and not at exit: let it take in the entries above.
        from locust.stats import CSV_STATS_INTERVAL_SEC

        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)
    if MASTER.options.bg_summary:
        with open(MASTER.options.bg_summary, "w") as fh:
            json.dump(summary, fh, indent=2)
    if summary["stale"] or summary["flips"]["errors"] or summary["counters"]["dropped"]:
        environment.process_exit_code = 1


EVENTS.init_command_line_parser.add_listener(_options)
EVENTS.init.add_listener(_on_init)
EVENTS.test_start.add_listener(_on_test_start)
EVENTS.spawning_complete.add_listener(_on_spawning_complete)
EVENTS.test_stopping.add_listener(_on_test_stopping)
EVENTS.quitting.add_listener(_on_quitting)


def build_summary(env: Any, master: Master) -> dict[str, Any]:
    opts = master.options
    total = env.runner.stats.total
    user_failures = sum(
        e.num_failures for e in env.runner.stats.entries.values() if e.method not in ("FLIP", "ADMIN", "STALE")
    )
    summary = master.judge.summary()
    summary.update(
        {
            "config": {
                "host": opts.host,
                "admin": opts.bg_admin,
                "preview": opts.bg_preview or None,
                "scenario": opts.bg_scenario,
                "users": opts.num_users,
                "spawn_rate": opts.spawn_rate,
                "run_time_s": opts.run_time,
                "switch_every_s": opts.bg_switch_every,
                "rate_per_user": opts.bg_rate or None,
                "workers": len(master.workers),
            },
            "target_rps": (opts.num_users * opts.bg_rate) if opts.bg_rate > 0 else None,
            "locust": {
                "requests": total.num_requests,
                "failures": total.num_failures,
                "user_request_failures": user_failures,
                "cpu_warning": bool(env.runner.cpu_warning_emitted or env.runner.worker_cpu_warning_emitted),
            },
            "failures": user_failures,
            "counters": master.counters,
        }
    )
    return summary


def report(s: dict[str, Any]) -> str:
    """The custom statistics, printed by the master before Locust's own tables."""
    flips, lat = s["flips"], s["latency"]

    def ms(d: dict[str, Any] | None, key: str) -> str:
        v = (d or {}).get(key)
        return "-" if v is None else f"{v:.1f}"

    lines = [
        "== bluegreen: flips under load",
        f"requests {s['requests']}  failures {s['failures']}  connection errors {s['counters']['connection_errors']}"
        f"  non-2xx {sum(s['counters']['http_errors'].values())}  stale after ack {s['stale']}"
        f"  unjudged {s['unjudged']}  throughput {s['throughput_rps']} req/s",
        f"flips {flips['count']} (errors {flips['errors']})  ack p50 {ms(flips['ack'], 'p50_ms')} ms"
        f"  p99 {ms(flips['ack'], 'p99_ms')} ms  max {ms(flips['ack'], 'max_ms')} ms",
        f"first new-color response after flip start: p50 {ms(flips['first_new_color_after_start'], 'p50_ms')} ms"
        f"  p99 {ms(flips['first_new_color_after_start'], 'p99_ms')} ms",
    ]
    for key in sorted(lat):
        h = lat[key]
        lines.append(
            f"  {key:<22} n={h['count']:<8} p50 {ms(h, 'p50_ms')}  p95 {ms(h, 'p95_ms')}  p99 {ms(h, 'p99_ms')}"
            f"  max {ms(h, 'max_ms')} ms"
        )
    lines += [f"  STALE: {e}" for e in s["stale_examples"][:5]]
    return "\n".join(lines)
