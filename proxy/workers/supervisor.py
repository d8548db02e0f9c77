"""The supervisor of `bluegreen proxy --workers N`: one control plane, N data-plane processes.

The admin API, the Switch and the health checks live here, on a loop that carries no client
traffic, so a flip never queues behind the data plane. The supervisor binds every listening socket
once (no SO_REUSEPORT: nobody else can join it) and its workers inherit them; it keeps them open, so a
restarted worker accepts on the same sockets and a hot upgrade (`proxy.workers.upgrade`) hands them
on. The Switch's apply callback is `publish`: pools are pushed to every worker and
answered only when each has acknowledged them; routes are one shared word (`proxy.workers.routeword`)
that every worker's next request reads, written only after the pools it names were acknowledged. A
worker that dies is restarted on the current state. The supervisor's own Pool objects serve health
checks and status only; the workers' counters are summed in `WorkerStats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.config import DEFAULT_APP, Config
from proxy.control.api import EndpointStatus, PoolStatus, ProxyStatus, Routes, UnavailableError
from proxy.control.local import LocalControl
from proxy.controlplane.admin import make_admin_app
from proxy.controlplane.events import SETTINGS as LOG_SETTINGS, emit, flush as flush_events
from proxy.controlplane.health import HealthChecker
from proxy.controlplane.metrics import make_registry
from proxy.controlplane.runtime import Runtime, RuntimeServer, serve_runtime
from proxy.controlplane.state import DesiredState
from proxy.controlplane.stats import WorkerStats
from proxy.controlplane.switch import Switch, check_labels, normalize_endpoints, pool_status
from proxy.controlplane.watch import Watch
from proxy.dataplane.pool import PoolSet, PoolSpec
from proxy.dataplane.routes import MAX_APPS, MAX_SLOT, NO_SLOT, encode
from proxy.dataplane.tls import ServerTls
from proxy.fleet.etcd import StoreUnavailableError
from proxy.fleet.member import Fleet
from proxy.server import read_config_for_reload
from proxy.workers.channel import Channel
from proxy.workers.ports import bind_listener, bind_unix, bound_at, unlink_if_ours
from proxy.workers.routeword import shared_word
from proxy.workers.upgrade import (
    PROTOCOL,
    Handover,
    Link,
    UpgradeError,
    UpgradeListener,
    proxy_version,
    socket_path,
)
from proxy.workers.worker import raise_priority

log = logging.getLogger("bluegreen.supervisor")
ACK_TIMEOUT = 5.0
SUCCESSOR_TIMEOUT = 60.0  # a new process that took the sockets has this long to serve, else the old one goes on
HANDING_OVER = "an upgrade is handing this proxy over to a new process: nothing was changed; retry"


class Worker:
    def __init__(self, index: int, proc: asyncio.subprocess.Process, channel: Channel, restarts: int = 0) -> None:
        self.index, self.proc, self.channel = index, proc, channel
        self.started = time.monotonic()
        self.restarts = restarts  # consecutive quick deaths: the restart backoff grows with them

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class SupervisedControl(LocalControl):
    def __init__(self, switch: Switch, supervisor: Supervisor, app: str = DEFAULT_APP) -> None:
        super().__init__(switch, app)
        self._supervisor = supervisor

    async def status(self) -> ProxyStatus:
        await self._supervisor.refresh_stats()
        return await super().status()


class FleetControl(SupervisedControl):
    """Changes go through etcd (compare-and-swap) and answer once the whole fleet serves them."""

    def __init__(self, switch: Switch, supervisor: Supervisor, fleet: Fleet, app: str = DEFAULT_APP) -> None:
        super().__init__(switch, supervisor, app)
        self._fleet = fleet

    async def switch(
        self, active: str, preview: str | None = None, *, force: bool = False, generation: int | None = None
    ) -> Routes:
        return await self._fleet.switch(self.app, active, preview, force=force, generation=generation)

    async def set_endpoints(self, pool: str, endpoints: Sequence[str], labels: Mapping[str, str] | None = None) -> None:
        key = self._switch.pool_key(self.app, pool)
        await self._fleet.set_endpoints(
            key, normalize_endpoints(endpoints), None if labels is None else check_labels(labels)
        )

    async def delete_pool(self, pool: str) -> None:
        await self._fleet.delete_pool(self.app, pool)


class Supervisor:
    def __init__(self, config: Config, workers: int, takeover: Handover | None = None) -> None:
        self.config = config
        self.n = workers
        self.workers: dict[int, Worker] = {}
        self.registry = PoolSet(config)  # Pool objects for health checks and status; the workers serve
        for pc in config.pools:
            self.registry.set(pc.name, pc.endpoints, pc.balancer)
        self.stats = WorkerStats()
        self.health = HealthChecker()
        self.health.on_change = self._health_changed
        self.switch = Switch(
            config,
            self.registry.pools,
            self.health,
            self.publish,
            describe=self._describe,
            configure=self._configure,
            apply_now=self.publish_now,
        )
        self.ports: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._runtime: RuntimeServer | None = None  # the runtime socket's server (`admin.socket`)
        self._runtime_inode = 0
        self._stopping = False
        self._monitors: list[asyncio.Task[None]] = []
        self._health_push: asyncio.Task[None] | None = None
        self.settings_epoch = 0  # bumped by a reload: workers re-read the config file's settings
        self.fleet: Fleet | None = None
        self.word_fd, self.word = shared_word()
        self._word_names: set[str] = set()  # the pools the published word names
        self._shaped: dict[str, PoolSpec] = {}  # the specs the supervisor's own pools were last shaped after
        self._pushed: DesiredState | None = None  # the state (pools) every live worker acknowledged
        self._pushed_health: dict[str, dict[str, int]] = {}  # and the health verdicts sent with it
        self._pushed_epoch = 0
        self._slots: dict[str, int] = {}  # each pool's slot, as route words name pools
        self._app_slots: dict[str, int] = {}  # each application's route word
        self.sockets: dict[str, socket.socket] = {}  # listeners by role, and "admin": bound here, inherited
        self.takeover = takeover
        self.owner = takeover is None  # changes are accepted (a successor waits until its predecessor stopped)
        self._frozen = False  # handing over to a successor: changes are refused (503 + Retry-After)
        self._follower = False  # handed over: this draining proxy applies what its successor forwards
        self._predecessor: Link | None = None  # a draining predecessor, to which each change is forwarded
        self.handed_over = asyncio.Event()  # a successor serves: this one drains and exits
        self.watch: Watch | None = None  # ejections and drains, reported as events
        self.upgrade = UpgradeListener(socket_path(config))
        if takeover is not None:
            self._adopt_takeover(takeover.state)

    def _adopt_takeover(self, taken: dict[str, Any]) -> None:
        """The predecessor's live state: routes and pools with their generation, what its file said when last
        loaded (so a reload flips only if the file changed since), and its health verdicts."""
        state = DesiredState.from_json(taken["state"])
        self._reshape(state)
        self.switch.state = state
        loaded = taken.get("loaded")
        if isinstance(loaded, dict):
            self.switch.loaded = {name: (routes[0], routes[1]) for name, routes in loaded.items()}
        elif isinstance(loaded, list):  # a predecessor from before applications: the default one's
            self.switch.loaded = {DEFAULT_APP: (loaded[0], loaded[1])}
        else:
            self.switch.loaded = {name: (a.active, a.preview) for name, a in state.apps.items()}
        self.registry.apply_verdicts(taken.get("health", {}))

    def _bind(self) -> None:
        """Every listening socket, once: inherited from the predecessor where its address is the configured
        one, else bound here (PortError: one line naming the port and its owner)."""
        inherited = dict(self.takeover.sockets) if self.takeover is not None else {}
        wanted = {f"listeners.{role}": (role, lc.host, lc.port) for role, lc in self.config.listeners.items()}
        wanted["admin"] = ("admin", self.config.admin.host, self.config.admin.port)
        try:
            for key, (role, host, port) in wanted.items():
                sock = inherited.pop(role, None)
                if sock is not None and not _same_address(sock, host, port):
                    sock.close()
                    sock = None
                # The admin port accepts once everything serves (the readiness signal): its site listens last.
                self.sockets[role] = sock or bind_listener(key, host, port, listen=role != "admin")
            path = self.config.admin.socket
            if path is not None:
                sock = inherited.pop("runtime", None)
                if sock is not None and not bound_at(sock, path):
                    sock.close()
                    sock = None
                self.sockets["runtime"] = sock or bind_unix("admin.socket", path)
                self._runtime_inode = os.stat(path).st_ino
        except OSError:
            for sock in self.sockets.values():
                sock.close()
            self.sockets = {}
            raise
        finally:
            for sock in inherited.values():
                sock.close()  # a listener the new config no longer has: the predecessor's copy serves until it stops
        for sock in self.sockets.values():
            sock.set_inheritable(True)

    def check_changes(self) -> None:
        """Refuse a change while a handover is under way (UnavailableError, answered 503 + Retry-After)."""
        if self._frozen or not self.owner:
            raise UnavailableError(HANDING_OVER)

    async def start(self) -> None:
        raise_priority()
        self._bind()
        for pool in self.registry.pools.values():
            self.health.watch(pool)

        def controls(app: str) -> SupervisedControl:
            if self.fleet is not None:
                return FleetControl(self.switch, self, self.fleet, app)
            return SupervisedControl(self.switch, self, app)

        if self.config.state.backend == "etcd":
            admin = f"http://{self.config.admin.host}:{self.config.admin.port}"
            membership = self.takeover.state.get("fleet") if self.takeover is not None else None
            self.fleet = Fleet(self.config, self.switch, self._push_fence, admin, membership=membership)
            try:
                await self.fleet.start()  # the fleet's state, before any worker serves
            except StoreUnavailableError as exc:
                raise OSError(f"cannot join the fleet: {exc}") from None
        async with self.switch.lock:
            await self.publish(self.switch.state)  # no worker yet: settles the slots and writes the first word
            for i in range(self.n):
                await self._spawn(i)
        fleet = self.fleet
        app = make_admin_app(
            controls,
            make_registry(
                self.switch,
                lambda: self.stats.pools.values(),
                lambda: self.stats.clients,
                store_up=(lambda: fleet.store_up) if fleet else None,
                workers=lambda: [(w.index, w.proc.pid) for w in self.workers.values() if w.alive],
                access_log_dropped=lambda: self.stats.access_log_dropped,
            ),
            token=self.config.admin.token,
            serving=lambda: not self._stopping,
            before_metrics=self.refresh_stats,
            reload=self.reload,
            fleet_status=fleet.status if fleet else None,
            switch_report=(lambda: fleet.last_report) if fleet else None,
            apps=self.switch.apps,
        )
        app.middlewares.append(self._handover_guard)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        admin_tls = ServerTls(self.config.admin.tls, self.config.source) if self.config.admin.tls else None
        site = web.SockSite(
            self._runner, self.sockets["admin"], ssl_context=admin_tls.context if admin_tls is not None else None
        )
        await site.start()
        self.ports = {role: sock.getsockname()[1] for role, sock in self.sockets.items() if role != "runtime"}
        if "runtime" in self.sockets:
            runtime = Runtime(
                controls,
                apps=self.switch.apps,
                guard=self.check_changes,
                switch_report=(lambda: fleet.last_report) if fleet else None,
                fleet_status=fleet.status if fleet else None,
                switch_now=None if fleet else self.switch.switch_now,  # a fleet's flips go through etcd
            )
            self._runtime = serve_runtime(self.sockets["runtime"], runtime)
        if self.owner:
            self._listen_for_successor()
        self.watch = Watch(self.switch, lambda: self.stats.pools.values(), refresh=self.refresh_stats)
        self.watch.start()

    def reopen_logs(self) -> None:
        """SIGUSR1: every worker reopens the access log (each writes its own lines to the file)."""
        for worker in self.workers.values():
            if worker.alive:
                worker.proc.send_signal(signal.SIGUSR1)

    @web.middleware
    async def _handover_guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """During a handover a change is refused with 503 and Retry-After (never applied by one process only)."""
        if request.method in ("POST", "PUT", "DELETE", "PATCH") and request.path.startswith("/api/"):
            try:
                self.check_changes()
                return await handler(request)  # type: ignore[no-any-return]
            except UnavailableError as exc:
                retry = {"Retry-After": "1"} if exc.message == HANDING_OVER else {}
                return web.json_response({"error": exc.message}, status=503, headers=retry)
        return await handler(request)  # type: ignore[no-any-return]

    def _listen_for_successor(self) -> None:
        try:
            self.upgrade.bind()
        except OSError as exc:
            log.warning("no hot upgrade for this proxy: %s", exc)
            return
        self.upgrade.serve(self._hand_over)

    # -- hot upgrade ------------------------------------------------------------------------

    async def complete_takeover(self) -> int:
        """A successor serves: tell the predecessor, which stops accepting; then accept changes. Returns its pid."""
        assert self.takeover is not None
        handover, self.takeover = self.takeover, None
        try:
            await handover.serving(ACK_TIMEOUT * 3)
            self._predecessor = handover.link
        except (OSError, TimeoutError, ValueError, UpgradeError) as exc:
            log.warning("the old proxy (pid %d) did not confirm it stopped: %s", handover.peer_pid, exc)
            handover.link.close()
        self.owner = True
        self._listen_for_successor()
        return handover.peer_pid

    async def _hand_over(self, link: Link, hello: dict[str, Any]) -> None:
        """Give a successor the sockets and the live state; once it serves, stop accepting and drain."""
        pid = hello.get("pid")
        async with self.switch.lock:  # a change under way completes first, and none starts after
            if self._stopping or not self.owner:
                await link.send({"op": "refused", "reason": "this proxy is stopping", "protocol": PROTOCOL})
                return
            self._frozen = True
        try:
            begun = time.monotonic()
            roles = list(self.sockets)
            await link.send(
                {"op": "sockets", "protocol": PROTOCOL, "version": proxy_version(), "pid": os.getpid(), "roles": roles},
                fds=[self.sockets[role].fileno() for role in roles],
            )
            await link.send(
                {
                    "op": "state",
                    "state": self.switch.state.to_json(),
                    "loaded": {name: list(routes) for name, routes in self.switch.loaded.items()},
                    "health": self._verdicts(),
                    "fleet": self.fleet.membership() if self.fleet is not None else None,
                }
            )
            print(f"bluegreen proxy: handing over to pid {pid}: sockets and state sent", flush=True)
            try:
                async with asyncio.timeout(SUCCESSOR_TIMEOUT):
                    reply = await link.receive()
            except TimeoutError:
                reply = {"op": "failed", "reason": f"it did not serve within {SUCCESSOR_TIMEOUT:g} s"}
            if reply is None or reply.get("op") != "serving":
                why = reply.get("reason", reply) if reply is not None else "it went away before serving"
                print(f"bluegreen proxy: upgrade failed (pid {pid}): {why}; this proxy goes on serving", flush=True)
                self._frozen = False
                return
            await self._drain_for_successor()
            self._follower = True
            await link.send({"op": "stopped"})
            took = (time.monotonic() - begun) * 1000
            print(
                f"bluegreen proxy: pid {reply.get('pid')} serves now (handover {took:.0f} ms); draining and exiting",
                flush=True,
            )
            self.handed_over.set()
            await self._follow(link)
        except BaseException:
            if not self.handed_over.is_set() and not self._stopping:
                self._frozen = False
            raise

    async def _follow(self, link: Link) -> None:
        """While draining: apply each change the successor forwards, so both route alike until this one exits."""
        try:
            while (message := await link.receive()) is not None:
                if message.get("op") == "adopt":
                    state = DesiredState.from_json(message["state"])
                    async with self.switch.lock:
                        await self.switch.adopt(state)
                    await link.send({"op": "adopted", "version": state.version})
        except (OSError, ValueError, KeyError, UpgradeError) as exc:
            log.warning("the successor's link broke while this proxy drains: %s", exc)

    async def _forward(self, state: DesiredState) -> None:
        """A change made here reaches the draining predecessor too (its keep-alive connections' last requests)."""
        link = self._predecessor
        if link is None:
            return
        try:
            async with asyncio.timeout(ACK_TIMEOUT + 1):
                await link.send({"op": "adopt", "state": state.to_json()})
                reply = await link.receive()
            if reply is None:
                raise ConnectionError("it exited")
        except (OSError, TimeoutError, ValueError, UpgradeError) as exc:
            if not isinstance(exc, ConnectionError):
                log.warning("the draining old proxy did not apply state version %d: %s", state.version, exc)
            self._predecessor = None
            link.close()

    async def _drain_for_successor(self) -> None:
        """Stop accepting everywhere (workers, admin), keep what runs; workers exit once drained."""
        self._stopping = True  # no worker restarts from now on
        live = [w for w in self.workers.values() if w.alive]
        results = await asyncio.gather(*(self._call(w, {"op": "drain"}) for w in live), return_exceptions=True)
        for worker, result in zip(live, results, strict=True):
            if isinstance(result, BaseException) and worker.alive:
                worker.proc.send_signal(signal.SIGTERM)  # it stops accepting on its way out
        if self.fleet is not None:
            self.fleet.detach()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._close_runtime()
        self.upgrade.close(unlink=False)  # the successor binds the path anew
        for sock in self.sockets.values():
            sock.close()  # the successor holds its own copies

    async def _spawn(self, index: int, restarts: int = 0) -> None:
        """Start worker `index` on the current state (called with the switch lock held)."""
        parent, child = socket.socketpair()
        served = [(role, sock) for role, sock in self.sockets.items() if role in self.config.listeners]
        listen = [f"--listen={role}={sock.fileno()}" for role, sock in served]
        listen_fds = tuple(sock.fileno() for _, sock in served)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # not the working directory first on sys.path: a `proxy/` folder there must not shadow this code
            "-m",
            "proxy.workers.worker",
            "--config",
            self.config.source,
            "--fd",
            str(child.fileno()),
            "--routes-fd",
            str(self.word_fd),
            *listen,
            f"--log-level={LOG_SETTINGS['level']}",  # its records (access-log errors, crashes) as the supervisor's
            f"--log-format={LOG_SETTINGS['format']}",
            pass_fds=(child.fileno(), self.word_fd, *listen_fds),
            env=_worker_env(),
        )
        child.close()
        worker = Worker(index, proc, await Channel.open(parent), restarts)
        await worker.channel.send(self._state())
        async with asyncio.timeout(15):
            reply = await worker.channel.receive()
        if reply is None:
            raise RuntimeError(f"worker {index} exited during start (exit status {await proc.wait()})")
        self.workers[index] = worker
        self._monitors.append(asyncio.get_running_loop().create_task(self._monitor(worker)))

    def stopping(self) -> bool:
        return self._stopping

    async def _monitor(self, worker: Worker) -> None:
        code = await worker.proc.wait()
        worker.channel.close()
        if self._stopping or self.workers.get(worker.index) is not worker:
            return
        # A worker that dies right after starting (a port taken, a bad environment) is restarted with
        # a growing delay rather than in a tight loop; one that ran a while is restarted at once.
        quick = time.monotonic() - worker.started < 5
        restarts = worker.restarts + 1 if quick else 0
        delay = min(5.0, 0.1 * 2**restarts) if quick else 0.0
        emit(
            log,
            logging.WARNING,
            "worker_exited",
            f"worker {worker.index} exited with {code}; restarting it in {delay:.1f}s",
            worker=worker.index,
            pid=worker.proc.pid,
            code=code,
            delay=delay,
        )
        while True:
            await asyncio.sleep(delay)
            async with self.switch.lock:
                if self.stopping():  # a call: stop() may have run while this task slept
                    return
                try:
                    await self._spawn(worker.index, restarts)
                    new = self.workers[worker.index].proc.pid
                    emit(
                        log,
                        logging.INFO,
                        "worker_restarted",
                        f"worker {worker.index} restarted (pid {new})",
                        worker=worker.index,
                        pid=new,
                    )
                    return
                except (OSError, RuntimeError, TimeoutError) as exc:
                    restarts += 1
                    delay = min(5.0, 0.1 * 2**restarts)
                    log.error("worker %d did not restart (%s); next try in %.1fs", worker.index, exc, delay)

    async def reload(self) -> dict[str, Any]:
        config = read_config_for_reload(self.config)
        if self.fleet is not None:
            # Pools and routes belong to the fleet (etcd); a reload changes only this proxy's settings.
            async with self.switch.lock:
                self._configure(config)
                self.switch.config = config
                await self.publish(self.switch.state)
            self.config = config
            return {"routes": self.switch.routes().to_json(), "changed": ["settings"], "needs_restart": []}
        result = await self.switch.reload(config)
        self.config = config
        return result

    def _configure(self, config: Config) -> None:
        """A reload's settings: the supervisor's pools take them now, the workers re-read the file."""
        self.registry.configure(config)
        self.settings_epoch += 1

    def _describe(self) -> list[PoolStatus]:
        """Pools as status shows them: health from this process's checks, counters from the workers."""
        out = []
        for name, pool in self.registry.pools.items():
            c = self.stats.pools.get(name)
            base = pool_status(pool)
            endpoints = tuple(
                EndpointStatus(e.address, e.healthy, c.endpoints.get(e.address, 0) if c else 0) for e in base.endpoints
            )
            routed = name in self.switch.state.routed()
            in_flight = c.in_flight if c else 0
            out.append(PoolStatus(name, endpoints, in_flight, not routed and in_flight > 0))
        for name, c in self.stats.pools.items():
            if name not in self.registry.pools and name != "none" and c.in_flight:
                endpoints = tuple(EndpointStatus(a, False, n) for a, n in c.endpoints.items())
                out.append(PoolStatus(name, endpoints, c.in_flight, True))  # removed, still draining
        return out

    def _state(self) -> dict[str, Any]:
        state = self._pushed
        return {
            "op": "state",
            "state": state.to_json() if state is not None else None,
            "slots": {name: self._slots[name] for name in state.pools} if state is not None else {},
            "app_slots": {name: self._app_slots[name] for name in state.apps} if state is not None else {},
            "health": self._pushed_health,
            "settings_epoch": self._pushed_epoch,
            "fence_until": self.fleet.fence_until() if self.fleet else 0.0,
        }

    async def _push_fence(self, until: float) -> None:
        """A renewed lease: workers may serve until `until` (monotonic clock, shared by the processes)."""
        live = [w for w in self.workers.values() if w.alive]
        await asyncio.gather(*(self._call(w, {"op": "fence", "until": until}) for w in live), return_exceptions=True)

    async def publish(self, state: DesiredState) -> None:
        """The Switch's apply callback: make every live worker serve `state`; return when each does (a hung
        worker is killed).

        Order matters: pools first, acknowledged; then the route word; then the removal of pools the old
        word named. So the word never names a pool a worker lacks, and a flip alone sends no message.
        Health verdicts follow in the background: a flip does not wait for them (workers also eject
        failing endpoints by themselves).
        """
        self._check_not_handed_over()
        reshaped = self._reshape(state)
        pushed = self._pushed.pools if self._pushed is not None else {}
        kept = {name: pushed[name] for name in self._word_names if name not in state.pools and name in pushed}
        await self._push_pools(state.with_pools({**state.pools, **kept}) if kept else state, health=False)
        self._store_words(state)
        if kept:
            await self._push_pools(state, health=False)
        if reshaped and self._verdicts() != self._pushed_health:  # a flip changes no endpoint: on_change covers it
            self._health_changed()
        if self._predecessor is not None and self.fleet is None:  # in a fleet both follow etcd
            await self._forward(state)

    def publish_now(self, state: DesiredState) -> bool:
        """`publish` when it needs no message, as a flip: every worker has the pools and the settings the
        state names, so the route words alone change. False otherwise (then `publish`)."""
        self._check_not_handed_over()
        if self._predecessor is not None and self.fleet is None:
            return False  # a draining successor's change also goes to its predecessor
        if state.pools != self._shaped or not self._pushed_already(state):
            return False
        self._store_words(state)
        return True

    def _check_not_handed_over(self) -> None:
        if self._frozen and not self._follower and self.fleet is None:
            raise UnavailableError(HANDING_OVER)  # the state was handed over: a change here would be lost

    def _store_words(self, state: DesiredState) -> None:
        """The route words of `state`: from the next request on, every worker routes by them."""
        slots = self._slots
        for name, app in state.apps.items():
            preview = slots[app.preview] if app.preview else NO_SLOT
            self.word[self._app_slots[name]] = encode(app.generation, slots[app.active], preview)
        for name in [n for n in self._app_slots if n not in state.apps]:
            self.word[self._app_slots.pop(name)] = 0  # no worker has the application now: its word is free
        self._word_names = state.routed()

    def _pushed_already(self, state: DesiredState) -> bool:
        """Whether the workers have the state's pools, applications and settings (health verdicts aside)."""
        return (
            self._pushed is not None
            and self.settings_epoch == self._pushed_epoch
            and self._pushed.pools == state.pools
            and {n: a.hosts for n, a in self._pushed.apps.items()} == {n: a.hosts for n, a in state.apps.items()}
        )

    def _reshape(self, state: DesiredState) -> bool:
        """The supervisor's own pools follow the state (for health checks and status). False when no pool
        changed, as in a flip: then no endpoint is parsed or compared (a flip keeps the same spec objects)."""
        if state.pools == self._shaped:
            return False
        for name, spec in state.pools.items():
            if self._shaped.get(name) != spec:
                self.registry.set(name, spec.addresses(), spec.balancer)
        for name in [n for n in self.registry.pools if n not in state.pools]:
            del self.registry.pools[name]
        self._shaped = dict(state.pools)
        return True

    def _verdicts(self) -> dict[str, dict[str, int]]:
        return self.registry.verdicts()

    async def _push_pools(self, state: DesiredState, *, health: bool) -> None:
        """Send the state's pools to every worker and wait for the acks, unless they have them already (with
        `health=False`, differences in health verdicts alone do not count)."""
        for name in state.pools:
            if name not in self._slots:
                self._slots[name] = next(i for i in range(1, MAX_SLOT + 1) if i not in self._slots.values())
        for name in state.apps:
            if name not in self._app_slots:
                used = set(self._app_slots.values())
                self._app_slots[name] = next(i for i in range(MAX_APPS) if i not in used)
        same = self._pushed_already(state)
        if same and not health:
            return  # a flip: the word alone changes, and no verdict is collected per endpoint
        verdicts = self._verdicts()
        if same and verdicts == self._pushed_health:
            return
        self._pushed, self._pushed_health, self._pushed_epoch = state, verdicts, self.settings_epoch
        self._slots = {name: self._slots[name] for name in state.pools}
        message = self._state()
        live = [w for w in self.workers.values() if w.alive]
        results = await asyncio.gather(*(self._call(w, message) for w in live), return_exceptions=True)
        for worker, result in zip(live, results, strict=True):
            # One that did not acknowledge cannot have applied the change: it restarts on the current state.
            if isinstance(result, BaseException) and worker.alive:
                worker.proc.kill()

    async def _call(self, worker: Worker, message: dict[str, Any]) -> dict[str, Any]:
        async with asyncio.timeout(ACK_TIMEOUT):
            return await worker.channel.call(message)

    def _health_changed(self) -> None:
        if self._health_push is None or self._health_push.done():
            self._health_push = asyncio.get_running_loop().create_task(self._push_health())

    async def _push_health(self) -> None:
        async with self.switch.lock:
            if self._pushed is not None:
                await self._push_pools(self._pushed, health=True)

    async def refresh_stats(self) -> None:
        live = [w for w in self.workers.values() if w.alive]
        results = await asyncio.gather(*(self._call(w, {"op": "stats"}) for w in live), return_exceptions=True)
        self.stats.merge([r["stats"] for r in results if isinstance(r, dict)], self.registry.pools)

    async def stop(self) -> None:
        self._stopping = True
        if self.watch is not None:
            await self.watch.stop()
        self.upgrade.close(unlink=not self.handed_over.is_set())
        for worker in self.workers.values():
            if worker.alive:
                worker.proc.send_signal(signal.SIGTERM)
        grace = max(self.config.shutdown_timeout, self.config.drain_timeout if self.handed_over.is_set() else 0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace + 5):
                await asyncio.gather(*(w.proc.wait() for w in self.workers.values()))
        for worker in self.workers.values():
            if worker.alive:
                worker.proc.kill()
                await worker.proc.wait()
        for task in self._monitors:
            task.cancel()
        if self.fleet is not None:
            await self.fleet.stop()
        await self.health.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._close_runtime()
        if self.config.admin.socket is not None and not self.handed_over.is_set():
            unlink_if_ours(self.config.admin.socket, self._runtime_inode)  # not a successor's path
        for sock in self.sockets.values():
            sock.close()
        if self._predecessor is not None:  # kept until now: a draining successor still forwards changes through us
            self._predecessor.close()
            self._predecessor = None
        flush_events()  # a flip's record held back a moment (`emit_soon`) is written before the loop ends

    def _close_runtime(self) -> None:
        """Stop accepting on the runtime socket (its answers in progress still go out)."""
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def _same_address(sock: socket.socket, host: str, port: int) -> bool:
    """Whether an inherited listening socket is bound where the config says (by address, or any port for 0)."""
    bound_host, bound_port = sock.getsockname()[:2]
    if port and bound_port != port:
        return False
    try:
        wanted = {info[4][0] for info in socket.getaddrinfo(host, port or None, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    return bound_host in wanted or (host in ("0.0.0.0", "::", "") and bound_host in ("0.0.0.0", "::"))


def worker_pids(supervisor: Supervisor) -> Sequence[int]:
    return [w.proc.pid for w in supervisor.workers.values() if w.alive]


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this process's, with the folder this code was imported from first on
    PYTHONPATH, so a worker runs the same code as its supervisor wherever it was started from."""
    env = dict(os.environ)
    home = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = home + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
