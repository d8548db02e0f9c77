"""The proxy's commands: `proxy` (run it), `status` and `switch` (through its admin API or runtime socket)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from proxy.config import Config, ConfigError, load_config
from proxy.control.api import ControlError

DEFAULT_ADMIN = "http://127.0.0.1:8090"


def register(sub: Any) -> None:
    p = sub.add_parser("proxy", help="run the edge proxy")
    p.add_argument("--config", required=True, metavar="FILE", help="proxy config (YAML)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: config)")
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="take the listening sockets and live state over from the running proxy of this config (hot upgrade)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info", help="event log level")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="event log format on stderr")
    p.add_argument(
        "--version", action=_Version, nargs=0, help="print the version and the data plane's mode (compiled or pure)"
    )
    p.set_defaults(func=cmd_proxy)

    s = sub.add_parser("status", help="show the route table and pools (of one application)")
    add_admin_args(s)
    add_app_arg(s)
    s.add_argument("-o", "--output", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_status)

    w = sub.add_parser("switch", help="make COLOR live (preview gets the other)")
    add_admin_args(w)
    add_app_arg(w)
    w.add_argument("color")
    w.add_argument("--preview", default=None, help="pool for the preview listener (default: the old active)")
    w.add_argument("--force", action="store_true", help="switch even if COLOR has no healthy endpoint")
    w.add_argument("--generation", type=int, default=None, help="only if the routes are at this generation")
    w.set_defaults(func=cmd_switch)


class _Version(argparse.Action):
    """`bluegreen proxy --version`: computed when asked, so other commands never import the data plane."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_line())
        parser.exit()


def version_line() -> str:
    from importlib import metadata

    from proxy.dataplane import fieldscan, pure_because

    try:
        release = metadata.version("bluegreen")
    except metadata.PackageNotFoundError:
        release = "unknown"
    why = pure_because()
    how = f"pure Python; {why}" if why else f"compiled with mypyc, head fields found in {fieldscan.IMPLEMENTATION}"
    return f"bluegreen {release} (data plane: {how})"


def add_admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin",
        default=os.environ.get("BLUEGREEN_ADMIN", DEFAULT_ADMIN),
        metavar="URL",
        help=f"admin API, or unix:PATH for the runtime socket (default: $BLUEGREEN_ADMIN or {DEFAULT_ADMIN})",
    )


def add_app_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--app", default=None, metavar="APP", help="the application (default: the default application)")


def fail(message: str, code: int = 1) -> int:
    print(f"bluegreen: {message}", file=sys.stderr)
    return code


def run_client(coro_fn: Callable[[Any], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    """Run `coro_fn` with the control of the proxy at `--admin`: its admin API, or its runtime socket."""
    from proxy.control.http import HttpControl
    from proxy.control.runtime import RuntimeControl, socket_path

    path = socket_path(args.admin)
    app = getattr(args, "app", None)

    async def main() -> int:
        control: HttpControl | RuntimeControl
        if path is not None:  # the file's mode is the access control: no token
            control = RuntimeControl(path, app=app)
        else:
            control = HttpControl(args.admin, os.environ.get("BLUEGREEN_ADMIN_TOKEN") or None, app=app)
        async with control:
            return await coro_fn(control)

    try:
        return asyncio.run(main())
    except ControlError as exc:
        return fail(f"{exc.status}: {exc.message}")
    except (TimeoutError, OSError) as exc:
        where = f"the runtime socket at {path}" if path is not None else f"the admin API at {args.admin}"
        return fail(f"cannot reach {where}: {exc or type(exc).__name__}")
    except Exception as exc:  # aiohttp.ClientError and friends: one line, no traceback
        return fail(f"{type(exc).__name__}: {exc} ({args.admin})")


def cmd_status(args: argparse.Namespace) -> int:
    async def go(control: Any) -> int:
        status = await control.status()
        apps = await control.apps()
        if args.output == "json":
            out = {"routes": status.routes.to_json(), "pools": [p.to_json() for p in status.pools], "apps": apps}
            print(json.dumps(out, indent=2))
            return 0
        r = status.routes
        name = args.app or "default"
        where = f"application {name}: " if len(apps) > 1 or args.app else ""
        print(f"{where}generation {r.generation}: active -> {r.active}, preview -> {r.preview or '(none)'}")
        for pool in status.pools:
            roles = [n for n, v in (("active", r.active), ("preview", r.preview)) if v == pool.name]
            state = ", ".join(roles) or ("draining" if pool.draining else "idle")
            print(f"pool {pool.name} ({state}), in flight {pool.in_flight}")
            for ep in pool.endpoints:
                print(f"  {ep.address:<24} {'healthy' if ep.healthy else 'UNHEALTHY':<10} in flight {ep.in_flight}")
            if not pool.endpoints:
                print("  (no endpoints)")
        others = {n: a for n, a in apps.items() if n != name}
        if others:
            print("other applications (bluegreen status --app APP):")
            for other, app in sorted(others.items()):
                routes = app["routes"]
                hosts = ", ".join(app["hosts"]) or "every other Host"
                print(f"  {other:<16} active -> {routes['active']}, preview -> {routes['preview']}  ({hosts})")
        fleet = await control.fleet()
        if fleet is not None:
            print(f"fleet: store {fleet['store']}, this proxy {fleet['self']}, on partition: {fleet['fence']}")
            for member in fleet["members"]:
                version = member.get("version", member.get("generation"))
                print(f"  {member['id']:<28} state version {version}  admin {member.get('admin', '?')}")
        return 0

    return run_client(go, args)


def cmd_switch(args: argparse.Namespace) -> int:
    async def go(control: Any) -> int:
        routes = await control.switch(args.color, args.preview, force=args.force, generation=args.generation)
        where = f"application {args.app}: " if args.app else ""
        print(
            f"{where}generation {routes.generation}: active -> {routes.active}, preview -> {routes.preview or '(none)'}"
        )
        return 0

    return run_client(go, args)


def cmd_proxy(args: argparse.Namespace) -> int:
    from proxy.controlplane.events import configure

    configure(args.log_level, args.log_format)  # the event log: flips, reloads, health, drains, workers
    try:
        config = load_config(args.config)
        from proxy.dataplane.tls import check_config

        check_config(config)  # a missing, mismatched or expired certificate: one line, before anything binds
        from proxy.dataplane.accesslog import check_access_log

        check_access_log(config)
    except ConfigError as exc:
        return fail(f"config error: {exc}", 2)
    workers = args.workers if args.workers is not None else config.workers
    if workers < 1:
        return fail("--workers must be at least 1", 2)
    from proxy.workers.upgrade import UpgradeError

    try:
        return run_proxy(config, workers, upgrade=args.upgrade)
    except UpgradeError as exc:
        return fail(f"cannot upgrade: {exc}")
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:  # a worker that did not start, too
        return fail(f"cannot start: {exc or type(exc).__name__}")


def run_proxy(config: Config, workers: int = 1, *, upgrade: bool = False) -> int:
    from proxy.dataplane.loop import new_event_loop
    from proxy.workers.supervisor import Supervisor
    from proxy.workers.upgrade import socket_path, take_over

    async def main() -> int:
        # The control plane (admin API, Switch, health checks) runs in this process and the data plane in
        # N worker processes, so a flip never waits behind client traffic. (ProxyServer is the embedded,
        # single-loop variant used in-process by the simulator and the tests.)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        ready = False
        successors: set[asyncio.Task[None]] = set()

        def on_usr2() -> None:
            if not ready or server.upgrade.busy or successors:
                print("bluegreen proxy: not upgrading: starting or an upgrade is in progress", flush=True)
                return
            task = loop.create_task(spawn_successor())
            successors.add(task)
            task.add_done_callback(successors.discard)

        loop.add_signal_handler(signal.SIGUSR2, on_usr2)  # before anything binds: its default action kills
        handover = await take_over(socket_path(config)) if upgrade else None
        server = Supervisor(config, workers, handover)
        try:
            await server.start()
        except BaseException as exc:
            if handover is not None:
                await handover.failed(str(exc) or type(exc).__name__)
            await server.stop()
            raise
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if handover is not None:
            predecessor = await server.complete_takeover()
            print(
                f"bluegreen proxy: took over from pid {predecessor} in {(time.monotonic() - started) * 1000:.0f} ms "
                f"(state version {server.switch.state.version})",
                flush=True,
            )

        async def spawn_successor() -> None:
            """SIGUSR2: start the new proxy (this program as installed now) with --upgrade; it takes over."""
            argv = [sys.executable, "-m", "bluegreen", "proxy", "--config", config.source, "--upgrade"]
            argv += ["--workers", str(workers)]
            proc = await asyncio.create_subprocess_exec(*argv)
            print(f"bluegreen proxy: upgrading: started pid {proc.pid}", flush=True)
            waiting = loop.create_task(server.handed_over.wait())
            exited = loop.create_task(proc.wait())
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                print(
                    f"bluegreen proxy: upgrade failed: pid {proc.pid} exited with status {proc.returncode} "
                    "before taking over; this proxy goes on serving",
                    flush=True,
                )
            else:
                exited.cancel()

        ready = True
        handed = loop.create_task(server.handed_over.wait())
        handed.add_done_callback(lambda _: stop.set())
        reloads: set[asyncio.Task[None]] = set()

        async def reload() -> None:
            import logging

            from proxy.controlplane.events import ACTOR, emit

            ACTOR.set({"via": "SIGHUP"})  # this task's context: the event log says who reloaded
            try:
                result = await server.reload()
            except ControlError as exc:  # no caller to answer: the event log says why, in its format
                emit(
                    logging.getLogger("bluegreen.reload"),
                    logging.WARNING,
                    "reload_refused",
                    f"reload refused: {exc.message}",
                    status=exc.status,
                    via="SIGHUP",
                )
                return
            changed = ", ".join(result["changed"]) or "nothing"
            print(f"bluegreen proxy: reloaded ({changed} changed)", flush=True)
            if result["needs_restart"]:
                print(f"bluegreen proxy: restart to apply {', '.join(result['needs_restart'])}", flush=True)

        def on_hup() -> None:
            task = loop.create_task(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGUSR1, server.reopen_logs)  # logrotate moved the access log
        ports = server.ports
        listeners = ", ".join(f"{role} http://{config.listeners[role].host}:{ports[role]}" for role in config.listeners)
        mode = f"{workers} workers" if workers > 1 else "1 worker"
        print(f"bluegreen proxy ({mode}): {listeners}; admin http://{config.admin.host}:{ports['admin']}", flush=True)
        await stop.wait()
        if not server.handed_over.is_set():
            print("bluegreen proxy: stopping, draining in-flight requests", flush=True)
        await server.stop()
        return 0

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())
