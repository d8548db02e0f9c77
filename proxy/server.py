"""ProxyServer: the composition of data plane, health checks, Switch, metrics and Admin API.

Lifecycle in explicit phases (uvicorn's server): `start` binds listeners and the admin site,
`stop` stops accepting, lets in-flight work finish within the shutdown timeout, then cuts the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.config import DEFAULT_APP, Config, ConfigError, load_config
from proxy.control.api import InvalidRequestError
from proxy.control.local import LocalControl
from proxy.controlplane.admin import make_admin_app
from proxy.controlplane.events import flush as flush_events
from proxy.controlplane.health import HealthChecker
from proxy.controlplane.metrics import make_registry
from proxy.controlplane.state import DesiredState, apply_to
from proxy.controlplane.stats import served_pools
from proxy.controlplane.switch import Switch, pool_status
from proxy.controlplane.watch import Watch
from proxy.dataplane.plane import DataPlane
from proxy.dataplane.tls import ServerTls, check_config

AdminSetup = Callable[[web.Application], None]


class ProxyServer:
    def __init__(self, config: Config, *, admin_setup: AdminSetup | None = None) -> None:
        if config.state.backend != "memory":
            # Fleet state needs the supervisor (`bluegreen proxy`); silently ignoring it would split the fleet.
            raise ValueError("the embedded proxy keeps its state in the process: run `bluegreen proxy` for a fleet")
        if config.admin.socket is not None:
            raise ValueError("the runtime socket (admin.socket) is served by `bluegreen proxy`, not the embedded proxy")
        self.config = config
        self._admin_setup = admin_setup
        self.dataplane: DataPlane | None = None
        self.switch: Switch | None = None
        self.health = HealthChecker()
        self._runner: web.AppRunner | None = None
        self.ports: dict[str, int] = {}
        self._stopping = False
        self.watch: Watch | None = None

    @property
    def control(self) -> LocalControl:
        """The default application's control interface."""
        return self.control_for(DEFAULT_APP)

    def control_for(self, app: str) -> LocalControl:
        assert self.switch is not None, "start() first"
        return LocalControl(self.switch, app)

    async def start(self) -> None:
        self.dataplane = dp = DataPlane(self.config)

        async def apply(state: DesiredState) -> None:
            apply_to(dp, state)

        def apply_now(state: DesiredState) -> bool:
            apply_to(dp, state)  # one process: the data plane takes any state at once
            return True

        self.switch = Switch(
            self.config,
            dp.pools,
            self.health,
            apply,
            describe=lambda: [pool_status(p) for p in served_pools(dp)[:-1]],
            configure=dp.apply_settings,
            apply_now=apply_now,
        )
        await dp.start()
        for pool in dp.pools.values():
            self.health.watch(pool)
        app = make_admin_app(
            self.control_for,
            make_registry(
                self.switch,
                lambda: served_pools(dp),
                lambda: len(dp.clients),
                access_log_dropped=lambda: dp.access_log_dropped,
            ),
            token=self.config.admin.token,
            serving=lambda: not self._stopping,
            reload=self.reload,
            apps=self.switch.apps,
        )
        if self._admin_setup is not None:
            self._admin_setup(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        admin_tls = ServerTls(self.config.admin.tls, self.config.source) if self.config.admin.tls else None
        site = web.TCPSite(
            self._runner,
            self.config.admin.host,
            self.config.admin.port,
            ssl_context=admin_tls.context if admin_tls is not None else None,
        )
        await site.start()
        self.ports = dict(dp.ports)
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.ports["admin"] = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.watch = Watch(self.switch, lambda: served_pools(dp))
        self.watch.start()

    def reopen_logs(self) -> None:
        """Open the access log's file again (what SIGUSR1 does to `bluegreen proxy`)."""
        if self.dataplane is not None:
            self.dataplane.reopen_logs()

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; an invalid one is refused (InvalidRequestError) and nothing changes."""
        assert self.switch is not None
        config = read_config_for_reload(self.config)
        result = await self.switch.reload(config)
        self.config = config
        return result

    async def stop(self, grace: float | None = None) -> None:
        self._stopping = True
        if self.watch is not None:
            await self.watch.stop()
        if self.dataplane is not None:
            await self.dataplane.stop(self.config.shutdown_timeout if grace is None else grace)
        await self.health.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        flush_events()  # a flip's record held back a moment (`emit_soon`) is written before the loop ends


def read_config_for_reload(current: Config) -> Config:
    if current.source.startswith("<"):
        raise InvalidRequestError("this proxy was not started from a config file")
    try:
        config = load_config(current.source)
        check_config(config)  # certificates, keys and CA files load before anything changes
    except ConfigError as exc:
        raise InvalidRequestError(f"config error, nothing changed: {exc}") from None
    return config
