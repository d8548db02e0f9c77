"""The runtime socket (`admin.socket`): flips and reads over a Unix socket, as HAProxy's runtime API.

The real `bluegreen proxy`, reached with socat (what an operator types) and with a plain socket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.config import ConfigError, parse_config
from proxy.control.api import ConflictError, ControlError, InvalidRequestError, NotFoundError, Routes
from proxy.control.http import HttpControl
from proxy.control.runtime import RuntimeControl
from proxy.controlplane.runtime import HELP, Runtime, RuntimeServer, serve_runtime
from proxy.server import ProxyServer
from tests.proxy.conftest import StartProxy, StartUpstream
from tests.proxy.support import ProxyProcess, RawClient
from tests.proxy.test_apps import bluegreen
from tests.proxy.test_upgrade import exited, started, upgrade
from tests.support import Process, wait_until


async def ask(path: Path, *lines: str) -> list[dict[str, Any]]:
    """Send the lines on one connection, half-close, read the answers until the proxy closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write("".join(line + "\n" for line in lines).encode())
    await writer.drain()
    writer.write_eof()
    async with asyncio.timeout(10):
        raw = await reader.read()
    writer.close()
    return [json.loads(line) for line in raw.decode().splitlines()]


async def socat(path: Path, command: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "socat", "-", f"UNIX-CONNECT:{path}", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(10):
        out, _ = await proc.communicate(command.encode() + b"\n")
    assert proc.returncode == 0
    (line,) = out.decode().splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


async def color(proxy: ProxyProcess) -> str:
    client = RawClient(proxy.ports["active"])
    try:
        return str(json.loads((await client.request("/color", close=True)).body))
    finally:
        await client.close()


def with_socket(proxy: ProxyProcess, path: Path) -> ProxyProcess:
    proxy.path.write_text(proxy.path.read_text().replace("admin:\n", f"admin:\n  socket: {path}\n", 1))
    return proxy


async def proxy_with_socket(upstream: StartUpstream, tmp_path: Path, **extra: Any) -> tuple[ProxyProcess, Path]:
    path = tmp_path / "bluegreen.sock"
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")]}
    proxy = with_socket(ProxyProcess(tmp_path, pools, "blue", "green", **extra), path)
    await started(await proxy.start())
    return proxy, path


async def test_flip_and_read_through_the_socket(upstream: StartUpstream, tmp_path: Path) -> None:
    proxy, path = await proxy_with_socket(upstream, tmp_path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the file mode is the access control
        assert await color(proxy) == "blue"
        (before,) = await ask(path, "routes")
        answer = await socat(path, "switch green")
        assert answer == {"active": "green", "preview": "blue", "generation": before["generation"] + 1}
        assert await color(proxy) == "green"  # served once answered
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy.url('admin')}/api/v1/routes") as resp:
                assert await resp.json() == answer  # the HTTP API sees the same state
            (routes,) = await ask(path, "routes")
            assert routes == answer
            async with session.get(f"{proxy.url('admin')}/api/v1/events") as resp:
                flips = [e for e in (await resp.json())["events"] if e["event"] == "flip"]
        # The audit trail names the socket and the peer's uid and pid (SO_PEERCRED).
        assert flips[-1]["via"] == "runtime socket" and flips[-1]["uid"] == os.getuid() and flips[-1]["pid"] > 0
        assert flips[-1]["active_to"] == "green"
        # Several commands on one connection: answered in order, each on its line.
        generation = answer["generation"] + 1
        answers = await ask(path, "switch blue", "routes", f"switch blue green force generation={generation}", "apps")
        assert [a.get("active") for a in answers[:3]] == ["blue", "blue", "blue"]
        assert answers[1]["generation"] == answers[2]["generation"] == generation  # idempotent: no new one
        assert answers[3]["apps"]["default"]["routes"]["active"] == "blue"
    finally:
        code, _ = await proxy.stop()
    assert code == 0
    assert not path.exists()  # removed on the way out


@pytest.mark.parametrize(
    ("command", "status", "words"),
    [
        ("frobnicate", 400, "unknown command"),
        ("switch", 400, "name the pool"),
        ("switch purple", 404, "purple"),
        ("switch green generation=7", 409, "generation 7"),
        ("switch green generation=x", 400, "generation=x"),
        ("switch green generation=\u00b2", 400, "generation=\u00b2"),  # a digit to str.isdigit, not to int()
        ("switch force", 404, "'force'"),  # the first word is always the pool to make active
        ("switch green blue extra", 400, "unexpected argument"),
        ("routes app=nope", 404, "nope"),
        ("routes color=red", 400, "unexpected argument"),
        ("pools app=nope", 404, "nope"),
        ("fleet", 404, "not part of a fleet"),
    ],
)
async def test_a_bad_command_gets_a_json_error_and_changes_nothing(
    upstream: StartUpstream, tmp_path: Path, command: str, status: int, words: str
) -> None:
    proxy, path = await proxy_with_socket(upstream, tmp_path)
    try:
        (before,) = await ask(path, "routes")
        answer, routes = await ask(path, command, "routes")
        assert answer["status"] == status and words in answer["error"], answer
        assert routes == before  # nothing changed, and the connection goes on
        too_long = await ask(path, "routes " + "x" * 5000)
        assert too_long == [{"error": "command longer than 4096 bytes", "status": 400}]
        assert await color(proxy) == "blue"
    finally:
        await proxy.stop()


async def test_a_pool_named_force(upstream: StartUpstream, tmp_path: Path) -> None:
    """`force` is the flag only after the pool to make active; `preview=` names any pool as the preview."""
    path = tmp_path / "bluegreen.sock"
    pools = {"blue": [await upstream("blue")], "force": [await upstream("force")]}
    proxy = with_socket(ProxyProcess(tmp_path, pools, "blue", None), path)
    await started(await proxy.start())
    try:
        assert (await ask(path, "switch force"))[0]["active"] == "force"
        assert await color(proxy) == "force"
        (answer,) = await ask(path, "switch blue preview=force")
        assert (answer["active"], answer["preview"]) == ("blue", "force")
        (answer,) = await ask(path, "switch force blue force")  # active force, preview blue, the flag
        assert (answer["active"], answer["preview"]) == ("force", "blue")
    finally:
        await proxy.stop()


async def refused(call: Any, kind: type[ControlError]) -> ControlError:
    try:
        await call
    except ControlError as exc:
        assert type(exc) is kind and exc.status == kind.status, repr(exc)
        return exc
    raise AssertionError(f"{call} was not refused")


async def test_the_runtime_control_answers_as_the_admin_api(upstream: StartUpstream, tmp_path: Path) -> None:
    """RuntimeControl (the CLI's `--admin unix:PATH`) reads, flips and is refused as HttpControl is."""
    proxy, path = await proxy_with_socket(upstream, tmp_path)
    try:
        async with RuntimeControl(str(path)) as local, HttpControl(proxy.url("admin")) as remote:
            assert await local.status() == await remote.status()
            assert await local.apps() == await remote.apps()
            assert await local.fleet() is None is await remote.fleet()
            assert await local.switch("green", generation=1) == Routes("green", "blue", 2) == await remote.routes()
            calls: list[tuple[type[ControlError], Callable[[Any], Any]]] = [
                (NotFoundError, lambda c: c.switch("purple")),
                (ConflictError, lambda c: c.switch("blue", generation=1)),
                (NotFoundError, lambda c: c.switch("blue", "purple")),
            ]
            for kind, call in calls:
                mine, theirs = await refused(call(local), kind), await refused(call(remote), kind)
                assert mine.message == theirs.message
            assert await local.switch("blue", "green", force=True) == Routes("blue", "green", 3)
            # What would split the command line is refused before anything is sent; pools are not its job.
            await refused(local.switch("green force"), InvalidRequestError)
            await refused(local.switch("green", "a=b"), InvalidRequestError)
            await refused(local.set_endpoints("yellow", ["127.0.0.1:1"]), InvalidRequestError)
            assert await remote.routes() == Routes("blue", "green", 3)
        async with RuntimeControl(str(path), app="nope") as other:
            await refused(other.routes(), NotFoundError)
        # The CLI through the socket: no token, the same lines as through the admin API.
        admin = f"unix:{path}"
        code, out = await bluegreen("switch", "green", "--admin", admin)
        assert code == 0 and "generation 4: active -> green, preview -> blue" in out, out
        code, out = await bluegreen("status", "--admin", admin)
        assert code == 0 and "pool green (active)" in out and "pool blue (preview)" in out, out
        code, out = await bluegreen("status", "--admin", f"unix:{tmp_path / 'nobody.sock'}")
        assert code == 1 and f"cannot reach the runtime socket at {tmp_path / 'nobody.sock'}" in out, out
    finally:
        await proxy.stop()


async def test_a_stale_socket_is_taken_over_and_a_live_one_refused(upstream: StartUpstream, tmp_path: Path) -> None:
    proxy, path = await proxy_with_socket(upstream, tmp_path)
    (tmp_path / "two").mkdir()
    second = with_socket(ProxyProcess(tmp_path / "two", {"blue": [await upstream("blue2")]}, "blue", None), path)
    try:
        proc = await Process.start(
            [sys.executable, "-m", "bluegreen", "proxy", "--config", str(second.path)], name="second proxy"
        )
        assert await exited(proc) != 0
        assert f"admin.socket: another process answers on {path}" in proc.output
        assert (await ask(path, "routes"))[0]["active"] == "blue"  # the first one still answers there
    finally:
        first = proxy.proc
        assert first is not None
        first.proc.send_signal(signal.SIGKILL)  # dies without removing its path
        await first.stop()
    assert path.exists()
    await started(await second.start())  # nobody answers there: the path is taken over
    try:
        (routes,) = await ask(path, "routes")
        assert routes["active"] == "blue" and routes["preview"] is None
    finally:
        await second.stop()


async def test_the_socket_survives_a_hot_upgrade(upstream: StartUpstream, tmp_path: Path) -> None:
    """The successor inherits the socket (same inode, no moment without it) and answers on it."""
    proxy, path = await proxy_with_socket(upstream, tmp_path, drain={"timeout": "2s"}, shutdown_timeout="2s")
    inode = os.stat(path).st_ino
    old = proxy.proc
    assert old is not None
    try:
        new = await upgrade(proxy)
    except BaseException:
        await proxy.stop()
        raise
    try:
        assert await exited(old) == 0
        assert os.stat(path).st_ino == inode
        answer = await socat(path, "switch green")
        assert answer["active"] == "green"
        assert await color(proxy) == "green"
    finally:
        await new.stop()
    await wait_until(lambda: not path.exists(), 5, message="the successor removed the path on its way out")


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base = {"listeners": {"active": {"port": 8080}}, "pools": {"blue": {"endpoints": ["127.0.0.1:1"]}}}
    base["routes"] = {"active": "blue"}
    with pytest.raises(ConfigError, match=r"admin\.socket: directory .*/nowhere does not exist"):
        parse_config({**base, "admin": {"socket": str(tmp_path / "nowhere" / "s.sock")}}, "t.yaml")
    with pytest.raises(ConfigError, match=r"admin\.socket: path too long"):
        parse_config({**base, "admin": {"socket": str(tmp_path / ("x" * 120))}}, "t.yaml")
    config = parse_config({**base, "admin": {"socket": "run.sock"}}, str(tmp_path / "proxy.yaml"))
    assert config.admin.socket == str(tmp_path / "run.sock")  # relative to the config file


# --- the connection handling, in process: a real Switch and data plane, the runtime server on a temp socket ---


@contextlib.contextmanager
def runtime_on(server: ProxyServer, path: Path) -> Iterator[RuntimeServer]:
    assert server.switch is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(64)
        runtime = serve_runtime(
            listener, Runtime(server.control_for, apps=server.switch.apps, switch_now=server.switch.switch_now)
        )
        try:
            yield runtime
        finally:
            runtime.close()


async def test_many_answers_to_a_client_that_reads_late_all_arrive_in_order(
    upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """Twenty thousand commands, read only after all are sent: megabytes of answers, more than the socket
    holds. Reading pauses while answers wait, and every answer comes out, in order, then the close."""
    server = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    path = tmp_path / "rt.sock"
    with runtime_on(server, path):
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**24)
        count = 20_000
        flips = (b"switch green\n", b"switch blue\n")
        writer.write(b"".join(flips[i // 10 % 2] if i % 10 == 0 else b"help\n" for i in range(count)))
        await writer.drain()
        writer.write_eof()
        await asyncio.sleep(0.2)  # the proxy fills the socket and holds the rest meanwhile
        async with asyncio.timeout(20):
            raw = await reader.read()
        writer.close()
        answers = [json.loads(line) for line in raw.splitlines()]
        assert len(raw) > 2_500_000 and len(answers) == count
        assert answers[1] == answers[-1] == HELP
        assert [a["active"] for a in answers[0:40:10]] == ["green", "blue", "green", "blue"]
        assert answers[-10]["active"] == "blue"
        assert answers[-10]["generation"] - answers[0]["generation"] == count // 10 - 1  # every flip made


async def test_a_command_in_pieces_then_another_then_the_close(
    upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    server = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    path = tmp_path / "rt.sock"
    with runtime_on(server, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        for piece in (b"swi", b"tch gr", b"een"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
            assert (await server.control.routes()).active == "blue"  # no command before its newline
        writer.write(b"\n")
        async with asyncio.timeout(5):
            assert json.loads(await reader.readline())["active"] == "green"
            writer.write(b"routes")  # the last command may end with the half-close instead of a newline
            writer.write_eof()
            assert json.loads(await reader.readline())["active"] == "green"
            assert await reader.read() == b""  # closed once everything is answered
        writer.close()


async def test_a_client_gone_before_its_answer_still_flips_and_others_are_served(
    upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    server = await start_proxy({"blue": [await upstream("blue")], "green": [await upstream("green")]})
    path = tmp_path / "rt.sock"
    with runtime_on(server, path) as runtime:
        for i in range(20):  # each sent and closed at once: its flip is made, its answer dropped
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                s.sendall(b"switch blue\n" if i % 2 else b"switch green\n")
        await wait_until(lambda: server.switch is not None and server.switch.switches == 20, 5, message="20 flips")
        clients = [ask(path, "routes") for _ in range(50)]  # a burst: accepted in batches, all answered
        answers = await asyncio.gather(*clients)
        assert all(a == answers[0] for a in answers) and len(answers) == 50
        assert answers[0][0]["active"] == "blue"  # the last of the twenty
        runtime.close()  # no more accepts: the kernel's backlog still takes a connect, nothing answers it
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"routes\n")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read()
        writer.close()


async def test_a_client_that_sends_without_ever_reading_is_held_back(
    upstream: StartUpstream, start_proxy: StartProxy, tmp_path: Path
) -> None:
    """Commands cost 5 bytes and their answers 155: the proxy stops reading once a megabyte of answers
    waits, so such a client stalls on its own writes instead of growing the proxy's memory."""
    server = await start_proxy({"blue": [await upstream("blue")]}, preview=None)
    path = tmp_path / "rt.sock"
    with runtime_on(server, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        chunk, sent = b"help\n" * 13_000, 0
        with pytest.raises(TimeoutError):
            while sent < 50_000_000:
                writer.write(chunk)
                async with asyncio.timeout(1.0):
                    await writer.drain()
                sent += len(chunk)
        assert sent < 5_000_000, sent
        writer.transport.abort()
        assert (await server.control.routes()).active == "blue"  # and the proxy goes on


async def test_a_flip_is_made_at_once_unless_it_must_wait(upstream: StartUpstream, start_proxy: StartProxy) -> None:
    """`Switch.switch_now` flips without a task or a loop turn, with `switch`'s checks and refusals; it
    declines (None) when a change holds the lock or the target has an endpoint never checked, and `switch`
    then waits or probes."""
    dead = "127.0.0.1:1"  # nothing listens there
    pools = {"blue": [await upstream("blue")], "green": [await upstream("green")], "gone": [dead]}
    server = await start_proxy(pools)
    switch = server.switch
    assert switch is not None
    assert switch.switch_now("green") is None  # never checked: `switch` probes it first
    assert (await switch.switch("green")).active == "green"
    assert switch.switch_now("green") == switch.routes()  # already served: answered, nothing changed
    assert switch.switch_now("blue") is None  # blue was never probed either
    assert (await switch.switch("blue")).active == "blue"
    async with switch.lock:  # a change under way: wait for it
        assert switch.switch_now("green") is None
        queued = asyncio.create_task(switch.switch("green", force=True))
        cancelled = asyncio.create_task(switch.switch("blue"))
        await asyncio.sleep(0)  # both wait for the lock
        cancelled.cancel()
    assert switch.switch_now("blue") is None  # released, but a flip queued before this one is not overtaken
    assert (await queued).active == "green" and (await switch.switch("blue")).active == "blue"
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert switch.lock.claims == 0  # the cancelled waiter's claim went with it
    flipped = switch.switch_now("green")  # both checked, nothing under way: made at once
    assert flipped is not None and flipped == switch.routes() and flipped.active == "green"
    assert (await server.control.routes()).active == "green"
    with pytest.raises(ConflictError, match="generation 1 is not the current one"):
        switch.switch_now("blue", generation=1)
    with pytest.raises(NotFoundError, match="purple"):
        switch.switch_now("purple")
    with pytest.raises(ConflictError, match="no healthy endpoint"):  # probed by `switch`: down
        await switch.switch("gone")
    with pytest.raises(ConflictError, match="no healthy endpoint"):  # known down: refused at once
        switch.switch_now("gone")
    assert switch.switch_now("gone", force=True) is not None  # forced: no check
    assert switch.routes().active == "gone"
