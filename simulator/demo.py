"""`bluegreen demo`: the proxy, the simulator and its API in one process, on real time.

A composition root (like `simulator.cli`): it starts the real `ProxyServer` with the simulator's
routes on its admin app, and binds the one Rollout of the manifests to the proxy's listeners. With
`--prometheus` it also starts a real Prometheus scraping the proxy's `/metrics` every second, makes it
the default address of `prometheus` metrics (Argo's ARGO_ROLLOUTS_PROMETHEUS_ADDRESS) and turns the
traffic generator on, since a success rate needs traffic to measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.config import ConfigError, parse_config
from proxy.server import ProxyServer
from simulator import operations
from simulator.analysis.prometheus import ADDRESS_ENV, LocalPrometheus, PrometheusError
from simulator.cluster import Cluster
from simulator.k8s.clock import LoopClock
from simulator.k8s.fields import ManifestError
from simulator.k8s.objects import Rollout
from simulator.manifests import Loaded, load_path
from simulator.web.api import setup_api
from simulator.web.dashboard import Dashboard, setup_dashboard
from simulator.web.kube import kubeconfig, make_kube_app
from simulator.workloads.kubelet import PodTiming
from simulator.workloads.pods import ServerRuntime

__all__ = ["BUNDLED_MANIFESTS", "BUNDLED_PROMETHEUS_MANIFESTS", "Demo", "DemoConfig", "main"]

# Package data (pyproject.toml), so an installed wheel finds them as a checkout does.
BUNDLED_MANIFESTS = Path(__file__).resolve().parent / "demo_manifests"
# The same Rollout gated by Argo's success-rate template on the proxy's metrics (`--prometheus`).
BUNDLED_PROMETHEUS_MANIFESTS = Path(__file__).resolve().parent / "demo_manifests_prometheus"
PLACEHOLDER_POOL = "unbound"  # the proxy config needs a routed pool before any ReplicaSet exists


@dataclass(frozen=True)
class DemoConfig:
    host: str = "127.0.0.1"
    active_port: int = 8080
    preview_port: int = 8081
    admin_port: int = 8090
    kube_port: int | None = None  # the Kubernetes API for kubectl (`bluegreen demo`: 8092); None: not served
    token: str | None = None
    timing: PodTiming = PodTiming()
    health_interval: str = "1s"
    prometheus: bool = False  # start a Prometheus scraping the proxy (needs `prometheus` on PATH)
    prometheus_address: str | None = None  # else: the default address of `prometheus` metrics, if any


class Demo:
    def __init__(self, manifests: Loaded, config: DemoConfig = DemoConfig()) -> None:
        self.manifests = manifests
        self.config = config
        self.cluster: Cluster | None = None
        self.server: ProxyServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._kube: web.AppRunner | None = None
        self.kube_port: int | None = None
        self._kubeconfig_dir: Path | None = None
        self.kubeconfig: Path | None = None
        self.prometheus: LocalPrometheus | None = None
        self.dashboard: Dashboard | None = None

    def proxy_config(self) -> dict[str, object]:
        c = self.config
        admin: dict[str, object] = {"host": c.host, "port": c.admin_port}
        if c.token:
            admin["token"] = c.token
        return {
            "listeners": {
                "active": {"host": c.host, "port": c.active_port},
                "preview": {"host": c.host, "port": c.preview_port},
            },
            "admin": admin,
            # One empty placeholder until the binding names a pool after each ReplicaSet a Service points
            # at (`rollout-bluegreen-547f9bd7cb`, labelled revision and image), switches to it and removes this.
            "pools": {PLACEHOLDER_POOL: {"endpoints": []}},
            "routes": {"active": PLACEHOLDER_POOL, "preview": PLACEHOLDER_POOL},
            "health_check": {"path": "/healthz", "interval": c.health_interval, "timeout": c.health_interval},
        }

    async def start(self) -> None:
        cluster = self.cluster = Cluster(
            LoopClock(),
            ServerRuntime(self.config.host),
            timing=self.config.timing,
            prometheus_address=self.config.prometheus_address,
        )

        def admin_setup(app: web.Application) -> None:
            setup_api(app, cluster)
            self.dashboard = setup_dashboard(app, cluster, lambda: self.ports, host=self.config.host)

        server = self.server = ProxyServer(parse_config(self.proxy_config(), "<demo>"), admin_setup=admin_setup)
        await server.start()
        if self.config.prometheus:
            prometheus = self.prometheus = LocalPrometheus([f"{self.config.host}:{self.ports['admin']}"])
            await prometheus.start()
            cluster.prometheus.default_address = prometheus.address
            assert self.dashboard is not None
            self.dashboard.traffic.start()
        rollouts = [o.name for o in self.manifests.objects if isinstance(o, Rollout)]
        cluster.attach(server.control, bind=rollouts[0] if len(rollouts) == 1 else None, replaces=(PLACEHOLDER_POOL,))
        # kubectl sends no bearer token over plain HTTP: with an admin token, the API stays off rather than open.
        if self.config.kube_port is not None and not self.config.token:
            await self._serve_kube(cluster)
        operations.apply(cluster.store, self.manifests.objects)
        self._task = asyncio.create_task(cluster.run())

    async def _serve_kube(self, cluster: Cluster) -> None:
        """The Kubernetes API on its own port (its /api/v1 is the core group's), and a kubeconfig for it."""
        assert self.config.kube_port is not None
        runner = self._kube = web.AppRunner(make_kube_app(cluster), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.kube_port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket there; port 0 asks for a free one
        sockets = getattr(server, "sockets", None) or []
        self.kube_port = int(sockets[0].getsockname()[1]) if sockets else self.config.kube_port
        self._kubeconfig_dir = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
        self.kubeconfig = self._kubeconfig_dir / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig(self.kube_server), encoding="utf-8")
        self.kubeconfig.chmod(0o600)

    @property
    def kube_server(self) -> str:
        return f"http://{self.config.host}:{self.kube_port}"

    async def stop(self) -> None:
        if self.dashboard is not None:
            # The traffic generator first: once the proxy closes its listeners, every request it still sent
            # would be counted as a failed live request (the admin app's shutdown stops it only later).
            await self.dashboard.traffic.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._kube is not None:
            await self._kube.cleanup()
        if self._kubeconfig_dir is not None:
            shutil.rmtree(self._kubeconfig_dir, ignore_errors=True)
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.cluster is not None:
            await self.cluster.close()
        if self.prometheus is not None:
            await self.prometheus.stop()

    @property
    def ports(self) -> dict[str, int]:
        assert self.server is not None
        return dict(self.server.ports)


def _banner(demo: Demo, source: str) -> str:
    ports = demo.ports
    rollouts = [o.name for o in demo.manifests.objects if isinstance(o, Rollout)]
    name = rollouts[0] if rollouts else "NAME"
    host = demo.config.host
    bound = (
        f"  Rollout {name} drives the proxy: its active Service is the live pool, its preview Service the preview"
        if len(rollouts) == 1
        else f"  {len(rollouts)} Rollouts: none is bound to the proxy (load a directory with exactly one)"
    )
    return "\n".join(
        [
            f"bluegreen demo: {source}",
            bound,
            f"  dashboard        http://{host}:{ports['admin']}/   (open it in a browser)",
            f"  live traffic     http://{host}:{ports['active']}/color",
            f"  preview          http://{host}:{ports['preview']}/color",
            f"  admin API        http://{host}:{ports['admin']}/api/v1/rollouts",
            *(
                [f"  Kubernetes API   {demo.kube_server}   (kubectl: export KUBECONFIG={demo.kubeconfig})"]
                if demo.kubeconfig is not None
                else (
                    ["  Kubernetes API   off: kubectl sends no token over plain HTTP, and BLUEGREEN_ADMIN_TOKEN is set"]
                    if demo.config.token and demo.config.kube_port is not None
                    else []
                )
            ),
            *(
                [
                    f"  Prometheus       {demo.prometheus.address}   (scrapes the admin port's /metrics every 1 s;"
                    " prometheus metrics without an address query it)",
                    f"  traffic          on: {demo.dashboard.traffic.rate:g} requests/s through each listener"
                    " (a success rate needs some)",
                ]
                if demo.prometheus is not None and demo.prometheus.port is not None and demo.dashboard is not None
                else []
            ),
            "",
            "Try, in another terminal:",
            *([] if ports["admin"] == 8090 else [f"  export BLUEGREEN_ADMIN=http://{host}:{ports['admin']}"]),
            *([f"  export KUBECONFIG={demo.kubeconfig}"] if demo.kubeconfig is not None else []),
            *([f"  kubectl get rollouts,rs,pods,svc      kubectl describe rollout {name}"] if demo.kubeconfig else []),
            f"  bluegreen rollouts get rollout {name} --watch",
            f"  bluegreen rollouts set image {name} '*=argoproj/rollouts-demo:green'",
            f"  bluegreen rollouts promote {name}",
            f"  bluegreen rollouts set image {name} '*=argoproj/rollouts-demo:bad-red'   # the analysis aborts",
            f"  bluegreen rollouts abort {name} | retry rollout {name} | undo {name} | pause {name} | restart {name}",
            "Ctrl-C stops everything.",
        ]
    )


async def _serve(manifests: Loaded, source: str, config: DemoConfig) -> int:
    demo = Demo(manifests, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await demo.start()
        for notice in manifests.notices:
            print(f"Warning: {notice}", file=sys.stderr)
        print(_banner(demo, source), flush=True)
        await stop.wait()
        print("\nstopping...", flush=True)
    finally:
        await demo.stop()
    return 0


def main(
    manifests: str | None,
    *,
    active_port: int = 8080,
    preview_port: int = 8081,
    admin_port: int = 8090,
    kube_port: int = 8092,
    prometheus: bool = False,
) -> int:
    """`bluegreen demo`; a port of 0 takes a free one (the banner names it)."""
    if prometheus and not LocalPrometheus.installed():
        print("bluegreen: --prometheus needs prometheus on PATH (Debian: apt-get install prometheus)", file=sys.stderr)
        return 1
    config = DemoConfig(
        active_port=active_port,
        preview_port=preview_port,
        admin_port=admin_port,
        kube_port=kube_port,
        token=os.environ.get("BLUEGREEN_ADMIN_TOKEN") or None,
        prometheus=prometheus,
        prometheus_address=os.environ.get(ADDRESS_ENV) or None,
    )
    path = Path(manifests) if manifests else BUNDLED_PROMETHEUS_MANIFESTS if prometheus else BUNDLED_MANIFESTS
    try:
        loaded = load_path(path)
    except ManifestError as exc:
        print(f"bluegreen: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(loaded, str(path), config))
    except ConfigError as exc:
        print(f"bluegreen: {exc}", file=sys.stderr)
        return 2
    except PrometheusError as exc:
        print(f"bluegreen: cannot start Prometheus: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bluegreen: cannot start the demo: {exc}", file=sys.stderr)
        return 1
