"""One contract for the control interface (`proxy.control.api.ProxyControl`), run over every transport.

Each test runs twice: in-process (`LocalControl`, what the embedded `ProxyServer` and the supervisor hand
the simulator) and over the admin API (`HttpControl`, what the CLI and a remote simulator use), against
the same proxy. The answers and the refusals must be the same either way: the same values, the same
error types, statuses and messages, including the fleet's `503` (state store down) and `504` (a member
did not acknowledge in time).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import DEFAULT_APP, load_config
from proxy.control.api import (
    AckTimeoutError,
    ConflictError,
    ControlError,
    InvalidRequestError,
    NotFoundError,
    ProxyControl,
    Routes,
    UnavailableError,
)
from proxy.control.http import HttpControl
from proxy.control.local import LocalControl
from proxy.controlplane.admin import CONTROLS
from proxy.server import ProxyServer
from proxy.workers.supervisor import Supervisor
from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import EtcdProcess, ProxyProcess, child_pids
from tests.support import free_port

# The control plane's answers, never a request forwarded: the same whether the data plane runs compiled or
# pure, so scripts/test runs them once.
pytestmark = pytest.mark.mode_independent
TRANSPORTS = ["local", "http"]


@contextlib.asynccontextmanager
async def over(transport: str, local: ProxyControl, admin_port: int) -> AsyncIterator[ProxyControl]:
    """`local` itself, or an HttpControl to the admin API that serves it."""
    if transport == "local":
        yield local
        return
    async with HttpControl(f"http://127.0.0.1:{admin_port}") as remote:
        yield remote


async def refused(call: Awaitable[object], kind: type[ControlError], message: str | None = None) -> ControlError:
    """`call` raises exactly `kind`, with its status and, when given, `message` (no transport decoration)."""
    with pytest.raises(ControlError) as excinfo:
        await call
    error = excinfo.value
    assert type(error) is kind, repr(error)
    assert error.status == kind.status
    if message is not None:
        assert error.message == message and str(error) == message
    return error


# -- one embedded proxy: every call and every refusal ------------------------------------------


@dataclass
class Subject:
    control: ProxyControl
    server: ProxyServer
    upstream: StartUpstream
    blue: str  # the blue pool's endpoint


@pytest.fixture(params=TRANSPORTS)
async def subject(request: pytest.FixtureRequest, upstream: StartUpstream, start_proxy: StartProxy) -> Any:
    blue = await upstream("blue")
    server = await start_proxy({"blue": [blue], "green": [await upstream("green")]})
    async with over(request.param, server.control, server.ports["admin"]) as control:
        yield Subject(control, server, upstream, blue)


async def test_status_and_routes_describe_what_is_served(subject: Subject) -> None:
    control = subject.control
    status = await control.status()
    assert status.routes == Routes("blue", "green", 1) == await control.routes()
    assert [p.name for p in status.pools] == ["blue", "green"]
    blue = status.pool("blue")
    assert blue is not None and not blue.draining and blue.in_flight == 0
    assert [(e.address, e.healthy, e.in_flight) for e in blue.endpoints] == [(subject.blue, True, 0)]
    assert status.pool("nope") is None


async def test_switch_flips_and_the_old_active_becomes_preview(subject: Subject) -> None:
    control = subject.control
    assert await control.switch("green") == Routes("green", "blue", 2)
    assert await control.routes() == Routes("green", "blue", 2)
    assert await control.switch("green") == Routes("green", "blue", 2)  # the same routes: nothing changes
    await control.set_endpoints("yellow", [await subject.upstream("yellow")])
    assert await control.switch("blue", "yellow") == Routes("blue", "yellow", 3)
    assert (await control.status()).routes == Routes("blue", "yellow", 3)


async def test_switch_compare_and_swap(subject: Subject) -> None:
    control = subject.control
    await refused(control.switch("green", generation=7), ConflictError, "generation 7 is not the current one (1)")
    assert await control.switch("green", generation=1) == Routes("green", "blue", 2)
    await refused(control.switch("blue", generation=1), ConflictError, "generation 1 is not the current one (2)")
    assert await control.routes() == Routes("green", "blue", 2)


async def test_switch_to_an_unknown_pool(subject: Subject) -> None:
    await refused(subject.control.switch("purple"), NotFoundError, "unknown pool 'purple'")
    await refused(subject.control.switch("green", "purple"), NotFoundError, "unknown pool 'purple'")
    assert await subject.control.routes() == Routes("blue", "green", 1)


async def test_switch_needs_a_healthy_endpoint_unless_forced(subject: Subject) -> None:
    control = subject.control
    await control.set_endpoints("dead", ["127.0.0.1:1"])  # refuses connections
    await refused(
        control.switch("dead"), ConflictError, "pool 'dead' has no healthy endpoint (use force to switch anyway)"
    )
    await control.set_endpoints("empty", [])
    await refused(control.switch("empty"), ConflictError, "pool 'empty' has no endpoints (use force to switch anyway)")
    assert await control.routes() == Routes("blue", "green", 1)
    assert await control.switch("dead", force=True) == Routes("dead", "blue", 2)


async def test_set_endpoints_creates_replaces_and_repeats_harmlessly(subject: Subject) -> None:
    control = subject.control
    yellow, other = await subject.upstream("yellow"), await subject.upstream("yellow")
    await control.set_endpoints("yellow", [yellow])
    pool = (await control.status()).pool("yellow")
    assert pool is not None and [e.address for e in pool.endpoints] == [yellow] and not pool.draining
    await control.set_endpoints("yellow", [yellow])  # the same list again changes nothing
    await control.set_endpoints("yellow", [yellow, other])
    pool = (await control.status()).pool("yellow")
    assert pool is not None and [e.address for e in pool.endpoints] == [yellow, other]
    assert await control.routes() == Routes("blue", "green", 1)  # pools are not routes


async def test_set_endpoints_refuses_a_bad_list(subject: Subject) -> None:
    control = subject.control
    error = await refused(control.set_endpoints("yellow", ["nope"]), InvalidRequestError)
    assert error.message.startswith("endpoints[0]: ")
    address = subject.blue
    await refused(
        control.set_endpoints("yellow", [address, address]),
        InvalidRequestError,
        f"endpoints[1]: duplicate endpoint {address!r}",
    )
    assert (await control.status()).pool("yellow") is None


async def test_delete_pool(subject: Subject) -> None:
    control = subject.control
    await refused(
        control.delete_pool("blue"), ConflictError, "pool 'blue' is named by a route; switch away from it first"
    )
    await refused(control.delete_pool("nope"), NotFoundError, "unknown pool 'nope'")
    await control.set_endpoints("yellow", [await subject.upstream("yellow")])
    await control.delete_pool("yellow")
    assert (await control.status()).pool("yellow") is None
    with pytest.raises(NotFoundError):
        await control.delete_pool("yellow")


# -- a fleet: the store's refusals (503) and the laggards (504) ----------------------------------

TTL = 2


@dataclass
class Fleet:
    control: ProxyControl
    etcd: EtcdProcess
    peer: ProxyProcess  # the other member, in its own process (so it can be frozen)


def fleet_state(etcd: EtcdProcess, name: str) -> dict[str, Any]:
    return {
        "backend": "etcd",
        "endpoints": [etcd.endpoint],
        "prefix": "/bg-contract/",
        "lease_ttl": f"{TTL}s",
        "ack_timeout": "500ms",
        "name": name,
    }


def served_control(supervisor: Supervisor) -> ProxyControl:
    """The in-process control object the supervisor's admin API serves (the one its HTTP calls reach)."""
    runner = supervisor._runner
    assert runner is not None
    return runner.app[CONTROLS](DEFAULT_APP)


@pytest.fixture(params=TRANSPORTS)
async def fleet(request: pytest.FixtureRequest, upstream: StartUpstream, tmp_path: Path) -> Any:
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    etcd = await EtcdProcess(tmp_path / "etcd").start()
    (tmp_path / "p1").mkdir()
    peer = ProxyProcess(tmp_path / "p1", pools, "blue", "green", state=fleet_state(etcd, "p1"))
    # This member runs in the test's process: a supervisor with one worker, as `bluegreen proxy` runs it.
    ports = {role: free_port() for role in ("active", "preview", "admin")}
    config = {
        "listeners": {role: {"host": "127.0.0.1", "port": ports[role]} for role in ("active", "preview")},
        "admin": {"host": "127.0.0.1", "port": ports["admin"]},
        "pools": {name: {"endpoints": eps} for name, eps in pools.items()},
        "routes": {"active": "blue", "preview": "green"},
        "state": fleet_state(etcd, "p0"),
    }
    path = tmp_path / "p0.yaml"
    path.write_text(yaml.safe_dump(config))
    supervisor = Supervisor(load_config(path), 1)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        await supervisor.start()
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # the supervisor raised its priority: that was the test's
        await peer.start()
        async with over(request.param, served_control(supervisor), ports["admin"]) as control:
            yield Fleet(control, etcd, peer)
    finally:
        if peer.process is not None:
            signal_tree(peer, signal.SIGCONT)
            await peer.stop()
        await supervisor.stop()
        await etcd.kill()


def signal_tree(proxy: ProxyProcess, sig: signal.Signals) -> None:
    """The member's supervisor and its workers: freezing a proxy means freezing all of them."""
    assert proxy.process is not None
    for pid in (proxy.process.pid, *child_pids(proxy.process.pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


Call = Callable[[ProxyControl], Awaitable[Any]]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.switch("blue"), id="switch"),
        pytest.param(lambda c: c.set_endpoints("yellow", ["127.0.0.1:1"]), id="set_endpoints"),
    ],
)
async def test_store_down_is_unavailable_and_changes_nothing(fleet: Fleet, call: Call) -> None:
    control = fleet.control
    assert await control.switch("green") == Routes("green", "blue", 2)  # the fleet works
    await fleet.etcd.kill()
    error = await refused(call(control), UnavailableError)
    assert "state store (etcd)" in error.message
    status = await control.status()  # the last routes keep serving
    assert status.routes == Routes("green", "blue", 2) and status.pool("yellow") is None


async def test_a_member_that_does_not_acknowledge_is_named_after_the_ack_timeout(fleet: Fleet) -> None:
    signal_tree(fleet.peer, signal.SIGSTOP)  # p1 keeps its lease for the TTL, but applies nothing
    laggard = "state version 2 is committed but not yet served by: p1"
    await refused(fleet.control.switch("green"), AckTimeoutError, laggard)
    assert await fleet.control.routes() == Routes("green", "blue", 2)  # committed: this proxy serves it


def test_every_transport_is_a_proxy_control() -> None:
    """Both transports implement the protocol the simulator is written against."""
    assert issubclass(HttpControl, ProxyControl) and issubclass(LocalControl, ProxyControl)
