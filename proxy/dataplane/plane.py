"""The DataPlane: listeners, the current RouteTable, pools, and the housekeeping tick.

Time on the hot path is a coarse clock (`now`, refreshed by the tick, like HAProxy's `now_ms`):
deadlines are set with one attribute read, and the tick sweeps them. Sweeping all client
connections costs ~0.1 µs each per tick, far less than a timer handle per request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proxy.config import AccessLogConfig, Config
from proxy.dataplane.accesslog import AccessLog, RequestIds
from proxy.dataplane.client import ClientConnection
from proxy.dataplane.http import VIA, error_response
from proxy.dataplane.outbox import Outbox
from proxy.dataplane.pool import Pool, PoolSet, PoolSpec
from proxy.dataplane.routes import MAX_APPS, NO_SLOT, App, HostMap, RouteTable, decode, local_word
from proxy.dataplane.tls import ServerTls
from proxy.dataplane.upstream import UpstreamConnection

# An application as the control plane describes it to the data plane: (Host names, active pool key,
# preview pool key, generation); its routes are applied through `route`, its Host names here.
AppSpec = tuple[tuple[str, ...], str, str | None, int]


class DataPlane:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.outbox = Outbox(self.loop)
        self._loop_thread = threading.get_ident()
        self.request_ids = RequestIds()
        self.access_log: AccessLog | None = None  # on: requests build LoggedExchanges (`proxy.dataplane.accesslog`)
        self._dropped_before = 0  # access-log lines dropped by logs a reload replaced
        self.apply_settings(config)
        self.overloaded_response = error_response(503, "Service Unavailable: too many connections", close=True)
        self.now = self.loop.time()
        self.clients: set[ClientConnection] = set()
        self.remote_clients = 0  # a supervisor's shadow: client connections held by its workers
        self.shutting_down = False
        self.fence_until = 0.0  # in a fleet: past this loop time the lease may be gone, so serve nothing
        self.all_closed = asyncio.Event()  # set when the last client leaves during shutdown
        # TLS termination per listener (certificates are loaded and checked here, before anything binds).
        self.tls = {role: ServerTls(lc.tls, config.source) for role, lc in config.listeners.items() if lc.tls}
        self.proto_via = {
            role: b"x-forwarded-proto: " + (b"https" if role in self.tls else b"http") + b"\r\nvia: " + VIA + b"\r\n"
            for role in config.listeners
        }
        self.registry = PoolSet(config)
        self.pools: dict[str, Pool] = self.registry.pools
        for pc in config.pools:
            self.set_pool(pc.name, pc.endpoints, pc.balancer)
        self.null_pool = Pool("none", ())
        self.draining: set[Pool] = set()
        # Requests compare their App's word here with its table's. A process that owns its routes keeps private
        # zeros; a worker maps the supervisor's shared words and the pool slots they name (`follow_routes`).
        self.route_word = local_word()
        self.slots: dict[int, Pool] = {}
        self.apps: dict[str, App] = {}
        self.app_map = HostMap({}, {}, None)
        self.set_apps({a.name: (a.hosts, a.active, a.preview, 1) for a in config.apps})
        self.servers: dict[str, asyncio.Server] = {}
        self.ports: dict[str, int] = {}
        self._tick_task: asyncio.Task[None] | None = None

    def apply_settings(self, config: Config) -> None:
        """Timeouts, limits and policies; read per use, so a reload takes effect for the next request."""
        self.config = config
        self.timeouts = config.timeouts
        self.limits = config.limits
        # The ones each request reads, as this (compiled) class's own attributes: reading them through the
        # config's dataclasses costs a dictionary lookup each (~250 instructions) under mypyc.
        self.header_timeout: float = config.timeouts.client_header
        self.idle_timeout: float = config.timeouts.idle
        self.keepalive_timeout: float = config.timeouts.keepalive
        self.upstream_header_timeout: float = config.timeouts.upstream_header
        self.max_header_bytes: int = config.limits.max_header_bytes
        self.max_body_bytes: int = config.limits.max_body_bytes
        self.outlier = config.outlier
        self.retries = config.retries
        self.trusted = config.trusted_proxies
        self._trusted_peers: dict[str, bool] = {}  # is_trusted's answers, by peer address
        t = config.timeouts
        shortest = min(t.client_header, t.upstream_keepalive, t.idle, t.keepalive, config.drain_timeout or 1)
        self.tick = max(0.01, min(0.5, shortest / 5))
        current = self.access_log.config if self.access_log is not None else None
        if config.access_log != current:
            self.in_loop(self._set_access_log, config.access_log)
        if hasattr(self, "registry"):
            self.registry.configure(config)
            for role, server_tls in self.tls.items():
                tls = config.listeners[role].tls if role in config.listeners else None
                if tls is not None:
                    server_tls.reload(tls, config.source)  # new handshakes get the new certificates

    def set_pool(
        self, name: str, endpoints: Iterable[tuple[str, int]], balancer: str | None = None
    ) -> tuple[Pool, str]:
        """Create pool `name` or replace its endpoints (and balancer) (`PoolSet.set`); the idle connections
        of retired endpoints are closed on the loop. Returns the pool and "new", "changed" or ""."""
        pool, change, retired = self.registry.set(name, endpoints, balancer)
        for ep in retired:
            self.in_loop(ep.close_idle)
        return pool, change

    def set_pools(self, specs: Mapping[str, PoolSpec]) -> None:
        """Make the pools these specs (a desired state's): create, reshape, and remove the others (they drain)."""
        for name, spec in specs.items():
            self.set_pool(name, spec.addresses(), spec.balancer)
        for name in [n for n in self.pools if n not in specs]:
            self.remove_pool(name)

    def remove_pool(self, name: str) -> Pool:
        """Take `name` out of the registry; what still runs on it drains (the caller checked no route names it)."""
        pool = self.pools.pop(name)
        pool.removed = True
        self.unroute(pool)
        return pool

    def _set_access_log(self, config: AccessLogConfig | None) -> None:
        old = self.access_log
        if old is not None:
            if old.config == config:
                return
            old.close_nowait()
            self._dropped_before += old.lost
        self.access_log = AccessLog(self.loop, config) if config is not None else None

    def reopen_logs(self) -> None:
        """SIGUSR1: open the access log's file again (logrotate moved it)."""
        if self.access_log is not None:
            self.access_log.reopen()

    @property
    def access_log_dropped(self) -> int:
        """Access-log lines dropped so far (the disk stalled, or writes failed)."""
        return self._dropped_before + (self.access_log.lost if self.access_log is not None else 0)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, reuse_port: bool = False, sockets: dict[str, socket.socket] | None = None) -> None:
        for role, lc in self.config.listeners.items():
            factory = self._factory(role)
            tls = self.tls.get(role)
            secure: dict[str, Any] = {}
            if tls is not None:
                secure = {"ssl": tls.context, "ssl_handshake_timeout": self.timeouts.client_header}
            # (Any: uvloop's Server.sockets is a list where typeshed says tuple, which compiled code would refuse.)
            server: Any
            if sockets and role in sockets:
                server = await self.loop.create_server(factory, sock=sockets[role], backlog=2048, **secure)
            else:
                server = await self.loop.create_server(
                    factory, lc.host, lc.port, reuse_port=reuse_port or None, backlog=2048, **secure
                )
            self.servers[role] = server
            self.ports[role] = server.sockets[0].getsockname()[1]
        self._tick_task = self.loop.create_task(self._ticker())

    def _factory(self, role: str) -> Callable[[], ClientConnection]:
        dp = self

        def factory() -> ClientConnection:
            return ClientConnection(dp, role)

        return factory

    def stop_accepting(self) -> None:
        """Close the listeners (this process's copies: a supervisor or a successor keeps them open) and shut
        every client connection down gracefully (`ClientConnection.shutdown`). Loop only; idempotent."""
        self.shutting_down = True
        for server in self.servers.values():
            server.close()
        for conn in list(self.clients):
            conn.shutdown()
        if not self.clients:
            self.all_closed.set()

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within `grace` seconds, then cut what is left."""
        if not self.shutting_down:
            self.stop_accepting()
        if self.clients:
            try:
                async with asyncio.timeout(grace):
                    await self.all_closed.wait()
            except TimeoutError:
                pass
        for conn in list(self.clients):
            conn.abort()
        for pool in self.pools.values():
            pool.close_idle()
        if self._tick_task is not None:
            self._tick_task.cancel()
            try:
                await self._tick_task
            except asyncio.CancelledError:
                pass
        for server in self.servers.values():
            await server.wait_closed()
        if self.access_log is not None:
            await self.access_log.close()

    # -- routing state (applied by the Switch) -------------------------------------------------

    # Thread model: the data plane runs on its loop's thread. A worker's control thread may call
    # `apply_routes` and `unroute`: the snapshot swap is one reference write (atomic under the GIL)
    # and takes effect for the next request at once; everything that touches transports or the
    # drain set is handed to the loop with `in_loop`.

    def in_loop(self, fn: Callable[..., object], *args: object) -> None:
        """Run `fn(*args)` on the data-plane loop: now when called on it, else soon (thread-safe)."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def set_apps(self, apps: Mapping[str, AppSpec], indices: Mapping[str, int] | None = None) -> None:
        """The applications and their Host names (the default application answers every other Host). A new
        application starts on the routes given (a worker's then follow its word); an existing one keeps its
        table (flips reach it through `route`). `indices`: each application's route word (a supervisor's);
        else kept, or the lowest free. Then one reference write of the HostMap; connections re-resolve."""
        for name in [n for n in self.apps if n not in apps]:
            del self.apps[name]  # its pools are removed with it (`set_pools`), so they drain
        for name, (_hosts, active, preview, generation) in apps.items():
            index = indices[name] if indices is not None else None
            app = self.apps.get(name)
            if app is None:
                if index is None:
                    used = {a.index for a in self.apps.values()}
                    index = next(i for i in range(MAX_APPS) if i not in used)
                table = RouteTable(self.pools[active], self.pools[preview] if preview else None, generation)
                self.apps[name] = app = App(name, index, table)
                self.in_loop(self._reconcile_routed)
            elif index is not None:
                app.index = index
        exact: dict[str, App] = {}
        wildcard: dict[str, App] = {}
        default = None
        for name, (hosts, *_) in apps.items():
            app = self.apps[name]
            if not hosts:
                default = app
            for host in hosts:
                if host.startswith("*."):
                    wildcard[host[1:]] = app
                else:
                    exact[host] = app
        self.app_map = HostMap(exact, wildcard, default)

    def route(self, app: App, active: Pool, preview: Pool | None, generation: int, word: int = 0) -> RouteTable:
        """The one place a RouteTable is built: swap the application's snapshot (one reference write), then
        start or cancel drains on the loop."""
        app.routes = routes = RouteTable(active, preview, generation, word)
        self.in_loop(self._reconcile_routed)
        return routes

    def _reconcile_routed(self) -> None:
        # The latest tables: reconciling is idempotent, whatever order swaps came in.
        named = set()
        for app in list(self.apps.values()):
            routes = app.routes
            named.add(id(routes.active))
            if routes.preview is not None:
                named.add(id(routes.preview))
        for pool in list(self.pools.values()) + list(self.draining):
            routed = id(pool) in named and not pool.removed
            if routed and not pool.routed:
                pool.routed = True
                self.draining.discard(pool)
            elif not routed and pool.routed:
                self._unroute(pool)

    def follow_routes(self, app: App) -> RouteTable:
        """The application's shared route word moved (a flip by the supervisor): rebuild its snapshot from it."""
        word = self.route_word[app.index]
        generation, a, p = decode(word)
        slots = self.slots
        active = slots.get(a)
        preview = slots.get(p) if p else None
        if a == NO_SLOT or active is None or (p and preview is None):
            # No word yet (a new application), or a slot not acknowledged yet: the supervisor writes a word only
            # after its pools, so the latter is a bug, not a race; keep serving the last table rather than guess.
            return app.routes
        return self.route(app, active, preview, generation, word)  # on the loop: drains start at once

    def unroute(self, pool: Pool) -> None:
        self.in_loop(self._unroute, pool)

    def _unroute(self, pool: Pool) -> None:
        pool.routed = False
        pool.drain_deadline = self.loop.time() + self.config.drain_timeout
        pool.close_idle()
        if pool.in_flight:
            self.draining.add(pool)

    def release(self, conn: UpstreamConnection) -> None:
        """Return an upstream connection to its endpoint's idle set, or close it."""
        ep = conn.endpoint
        conn.exchange = None
        if ep.retired or not ep.pool.routed or not conn.reusable() or len(ep.idle) >= ep.pool.max_idle:
            conn.close()
            return
        conn.idle_since = self.now
        ep.idle.append(conn)

    def is_trusted(self, ip: str) -> bool:
        """Whether a peer's forwarding fields are extended (`trusted_proxies`): parsed once per address (6.8 µs
        per new connection otherwise), the answers kept until the settings change or 65,536 are known."""
        known = self._trusted_peers
        answer = known.get(ip)
        if answer is None:
            answer = False
            if self.trusted and ip:
                try:
                    addr = ipaddress.ip_address(ip)
                    answer = any(addr in net for net in self.trusted)
                except ValueError:
                    pass
            if len(known) >= 65536:
                known.clear()
            known[ip] = answer
        return answer

    # -- housekeeping ------------------------------------------------------------------------

    async def _ticker(self) -> None:
        loop = self.loop
        while True:
            await asyncio.sleep(self.tick)
            self.now = now = loop.time()
            words = self.route_word
            for app in list(self.apps.values()):
                if words[app.index] != app.routes.word:
                    self.follow_routes(app)  # an idle worker still starts its drains after a flip
            self.sweep(now)
            if self.access_log is not None:
                self.access_log.flush()  # the lines of a quiet loop (a busy one flushes per batch)

    def sweep(self, now: float) -> None:
        for conn in [c for c in self.clients if c.deadline <= now]:
            conn.on_timeout()
        idle_before = now - self.timeouts.upstream_keepalive
        for pool in list(self.pools.values()):  # a copy: a control thread may add pools meanwhile
            for ep in pool.endpoints:
                if ep.idle:
                    ep.close_idle(older_than=idle_before)
                if ep.ejected_until:
                    ep.expire_ejection(now)
        for pool in list(self.draining):
            if pool.routed or not pool.in_flight:
                self.draining.discard(pool)
                pool.close_idle()
            elif now >= pool.drain_deadline:
                self.draining.discard(pool)
                self._cut(pool)

    def _cut(self, pool: Pool) -> None:
        """Drain deadline passed: end whatever still runs on `pool` (requests, streams, tunnels)."""
        for conn in list(self.clients):
            for ex in list(conn.queue):
                if ex.pool is pool:
                    ex.abort()
        pool.close_idle()
