"""A worker process: one DataPlane on the supervisor's listening sockets (inherited), driven by its channel.

Routes come from the supervisor's shared route word (`proxy.workers.routeword`): a flip is a store the
next request sees, with no message. Pools, health verdicts and settings come as state messages; it
applies the first before binding, so a (re)started worker serves the current routes from its first
request. Later states arrive on a control *thread*, not on the event loop: a saturated loop would
make a change wait for a whole round of ready connections (9+ ms measured). The thread updates the
pools and acknowledges at once; drains and socket work follow on the loop (`DataPlane.in_loop`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
from typing import Any, BinaryIO, cast

from proxy.config import ConfigError, load_config
from proxy.controlplane.events import LEVELS, ROOT, configure
from proxy.controlplane.state import DesiredState
from proxy.controlplane.stats import collect
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.routes import decode
from proxy.workers.heap import keep_heap
from proxy.workers.routeword import attach_word

# A control message waits for the GIL at most this long while the data plane runs Python code.
SWITCH_INTERVAL = 0.0005
CONTROL_NICE = -10  # Linux nice value of control threads and the supervisor (Linux: per thread)
log = logging.getLogger(f"{ROOT}.worker")


def raise_nofile_limit() -> None:
    """Use the hard limit for open files: each client connection and upstream connection is one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def raise_priority(tid: int = 0) -> None:
    """Schedule control work ahead of the data plane: on a saturated box a flip otherwise waits for CPU
    slices behind the busy data-plane threads. Needs privileges (root or CAP_SYS_NICE); best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, tid, CONTROL_NICE)
    except OSError:
        pass


def send(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    stream.flush()


def control_loop(
    stream: BinaryIO, dp: DataPlane, config_path: str, epoch: int, stop: asyncio.Event, grace: list[float]
) -> None:
    """The control thread: apply each state and acknowledge it; stop the worker when the supervisor goes."""
    raise_priority(threading.get_native_id())
    loop = dp.loop
    try:
        for line in stream:
            message = json.loads(line)
            op = message.get("op")
            if op == "fence":
                dp.fence_until = message["until"]
                send(stream, {"op": "ack", "generations": served(dp)})
            elif op == "state":
                dp.fence_until = message.get("fence_until", 0.0)
                if message.get("settings_epoch", 0) != epoch:
                    epoch = message["settings_epoch"]
                    loop.call_soon_threadsafe(dp.apply_settings, load_config(config_path))
                apply(dp, message)
                send(stream, {"op": "ack", "generations": served(dp)})
            elif op == "stats":
                send(stream, {"op": "stats", "stats": collect(dp)})
            elif op == "drain":
                # A successor serves the listeners now: stop accepting, shut idle connections, acknowledge; what
                # runs finishes within the drain timeout, then the worker exits.
                asyncio.run_coroutine_threadsafe(_stop_accepting(dp), loop).result(timeout=10)
                grace[0] = dp.config.drain_timeout
                loop.call_soon_threadsafe(stop.set)
                send(stream, {"op": "ack", "generations": served(dp)})
            else:
                send(stream, {"op": "error", "error": f"unknown op {op!r}"})
    except (OSError, ValueError, TimeoutError):
        pass
    # The supervisor is gone: stop gracefully rather than serve routes nobody can change.
    loop.call_soon_threadsafe(stop.set)


async def _stop_accepting(dp: DataPlane) -> None:
    dp.stop_accepting()


def apply(dp: DataPlane, message: dict[str, Any]) -> None:
    """A state message: the desired state's pools (its routes arrive through the shared word), the slots
    the word names them by, and the supervisor's health verdicts."""
    state = DesiredState.from_json(message["state"])
    dp.set_pools(state.pools)
    dp.registry.apply_verdicts(message["health"])
    dp.slots = {slot: dp.pools[name] for name, slot in message["slots"].items()}  # one reference write
    # Applications and their Host names; a new one starts on the state's routes, then follows its word.
    apps = {name: (a.hosts, a.active, a.preview, a.generation) for name, a in state.apps.items()}
    dp.set_apps(apps, message["app_slots"])


def served(dp: DataPlane) -> dict[str, int]:
    """The generation each application's routes have here: its shared word's (the next request follows it)."""
    return {name: decode(dp.route_word[app.index])[0] for name, app in list(dp.apps.items())}


async def serve(config_path: str, fd: int, word_fd: int, listen: dict[str, int]) -> int:
    config = load_config(config_path)
    sockets = {role: socket.socket(fileno=lfd) for role, lfd in listen.items()}
    sock = socket.socket(fileno=fd)
    stream = cast(BinaryIO, sock.makefile("rwb"))
    dp = DataPlane(config)
    dp.route_word = attach_word(word_fd)
    first = stream.readline()  # blocking is fine: nothing else runs before the first state
    if not first:
        return 1
    message = json.loads(first)
    apply(dp, message)
    for app in list(dp.apps.values()):
        dp.follow_routes(app)
    dp.fence_until = message.get("fence_until", 0.0)
    # Before the first ack: the supervisor forwards SIGUSR1 (reopen the access log) only to workers that acked.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dp.reopen_logs)
    await dp.start(sockets=sockets)
    send(stream, {"op": "ack", "generations": served(dp)})

    stop = asyncio.Event()
    grace = [dp.config.shutdown_timeout]  # the drain timeout after a handover (set by the control thread)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.setswitchinterval(SWITCH_INTERVAL)
    thread = threading.Thread(
        target=control_loop,
        args=(stream, dp, config_path, message.get("settings_epoch", 0), stop, grace),
        name="bluegreen-control",
        daemon=True,
    )
    thread.start()
    await stop.wait()
    await dp.stop(grace[0])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="bluegreen-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--routes-fd", type=int, required=True)
    parser.add_argument("--listen", action="append", default=[], metavar="ROLE=FD", help="an inherited listener")
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args()
    configure(args.log_level, args.log_format, ring=False)  # stderr is the supervisor's: one format for both
    from proxy.dataplane.loop import new_event_loop

    raise_nofile_limit()
    keep_heap()  # before the first body: bodies cycle through the heap
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # the data plane runs at normal priority (not the supervisor's)
    except OSError:
        pass
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            listen = {role: int(fd) for role, _, fd in (item.partition("=") for item in args.listen)}
            sys.exit(runner.run(serve(args.config, args.fd, args.routes_fd, listen)))
    except ConfigError as exc:
        log.error("worker %d: config error: %s", os.getpid(), exc, extra={"event": "worker_config_error"})
        sys.exit(2)


if __name__ == "__main__":
    main()
