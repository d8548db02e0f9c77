"""Port ownership, hot upgrade and worker restarts of the real `bluegreen proxy` (issue 15).

The supervisor binds each listening socket once and its workers inherit it; `--upgrade` (or SIGUSR2) hands
the sockets and the live state to a new process over a Unix socket, and the old one drains. Which process
serves a connection is read from /proc: the worker holding the server side of it, and that worker's parent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest
import yaml

from proxy.config import load_config
from proxy.workers.upgrade import PROTOCOL, socket_path
from tests.proxy.conftest import StartUpstream
from tests.proxy.support import EtcdProcess, ProxyProcess, RawClient, Response, child_pids
from tests.support import Process, free_port, wait_until

DRAIN = {"drain": {"timeout": "10s"}, "shutdown_timeout": "5s"}


# -- who serves what --------------------------------------------------------------------------


def _tcp_entries() -> list[list[str]]:
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            rows += [line.split() for line in fh.read().splitlines()[1:]]
    return rows


def _port(field: str) -> int:
    return int(field.rsplit(":", 1)[1], 16)


def _holder(inode: str) -> int | None:
    target = f"socket:[{inode}]"
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit() and _holds(entry.name, target):
                return int(entry.name)
    return None


def _holds(pid: str, target: str) -> bool:
    try:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) == target:
                        return True
                except OSError:
                    continue
    except OSError:
        pass
    return False


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def supervisor_serving(proxy_port: int, client_port: int) -> int | None:
    """The supervisor whose worker holds the proxy's side of the connection from `client_port`."""
    for fields in _tcp_entries():
        if _port(fields[1]) == proxy_port and _port(fields[2]) == client_port and fields[9] != "0":
            worker = _holder(fields[9])
            if worker is not None:
                return _parent(worker)
    return None


def supervisors_serving(proxy_port: int, client_ports: list[int]) -> dict[int, int]:
    """`supervisor_serving` for many connections in one pass over /proc (client port -> supervisor)."""
    inodes = {}
    for fields in _tcp_entries():
        if _port(fields[1]) == proxy_port and _port(fields[2]) in client_ports and fields[9] != "0":
            inodes[f"socket:[{fields[9]}]"] = _port(fields[2])
    found: dict[int, int] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with os.scandir(f"/proc/{entry.name}/fd") as fds:
                    for fd in fds:
                        try:
                            port = inodes.get(os.readlink(fd.path))
                        except OSError:
                            continue
                        if port is not None:
                            found[port] = _parent(int(entry.name))
            except OSError:
                continue
    return found


def listening_inode(port: int) -> str | None:
    for fields in _tcp_entries():
        if fields[3] == "0A" and _port(fields[1]) == port:
            return fields[9]
    return None


def local_port(client: RawClient) -> int:
    assert client.writer is not None
    return int(client.writer.get_extra_info("sockname")[1])


async def served_by(proxy_port: int, client_port: int) -> int:
    result: int | None = await wait_until(
        lambda: supervisor_serving(proxy_port, client_port), 5, message="the connection's owner"
    )
    assert result is not None
    return result


# -- the upgrade ---------------------------------------------------------------------------------


async def started(proxy: ProxyProcess) -> ProxyProcess:
    """Until the proxy printed its banner: its start is complete (it listens for a successor too)."""
    proc = proxy.proc
    assert proc is not None
    await wait_until(lambda: "admin http" in proc.output, 15, message=lambda: f"the banner in {proc.output!r}")
    return proxy


async def upgrade(proxy: ProxyProcess, *args: str) -> Process:
    """`bluegreen proxy --config FILE --upgrade`, until it says it took over (AssertionError if it exits)."""
    new = await Process.start(
        [sys.executable, "-m", "bluegreen", "proxy", "--config", str(proxy.path), "--upgrade", *args],
        name="bluegreen proxy --upgrade",
    )

    def done() -> bool:
        if new.returncode is not None:
            raise AssertionError(f"the new proxy exited with {new.returncode}: {new.output}")
        return "took over from pid" in new.output

    await wait_until(done, 30, message=lambda: f"the new proxy took over ({new.output!r})")
    return new


async def run_command(*args: str) -> tuple[int, str]:
    return await _wait(await Process.start([sys.executable, "-m", "bluegreen", *args], name="bluegreen"))


async def _wait(process: Process) -> tuple[int, str]:
    async with asyncio.timeout(30):
        await process.proc.wait()
    return await process.stop()


async def exited(process: Process) -> int:
    await wait_until(lambda: process.returncode is not None, 20, message=f"{process.name} exited")
    code = process.returncode
    assert code is not None
    return code


class Load:
    """Keep-alive and fresh-connection clients requesting until stopped; every failure is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = asyncio.Event()
        self.failures: list[str] = []
        self.ok = 0
        self.longest_fresh = 0.0  # the slowest fresh connection + request: the longest pause in accepting
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, keep_alive: int, fresh: int) -> Self:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._keep_alive()) for _ in range(keep_alive)]
        self.tasks += [loop.create_task(self._fresh()) for _ in range(fresh)]
        return self

    async def _keep_alive(self) -> None:
        client = RawClient(self.port)
        deadline = time.monotonic() + 60
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                self._check(await self._one(client, "keep-alive"))
        finally:
            await client.close()

    async def _fresh(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            client = RawClient(self.port)
            self._check(await self._one(client, "fresh", close=True))
            self.longest_fresh = max(self.longest_fresh, time.monotonic() - started)
            await client.close()

    async def _one(self, client: RawClient, kind: str, close: bool = False) -> str | None:
        """None, or what failed: which client, its request's number on its connection (1: the first) and how
        long the connection had been idle (since its last response) when the request went."""
        sent = time.monotonic()
        last = client.answered_at if client.writer is not None else None
        idle = asyncio.get_running_loop().time() - last if last is not None else 0.0
        try:
            resp = await client.request(close=close)
        except (OSError, asyncio.IncompleteReadError) as exc:
            number = client.on_connection
            await client.close()
            return f"{kind} request #{number} (idle {idle * 1000:.0f} ms, at {sent:.3f}): {exc!r}"
        if resp.status != 200:
            return f"{kind}: status {resp.status}"
        self.answered_ok(sent, resp)
        return None

    def answered_ok(self, sent: float, resp: Response) -> None:
        """A request sent at `sent` was answered `200` (a subclass records more)."""

    def _check(self, failure: str | None) -> None:
        if failure is None:
            self.ok += 1
        else:
            self.failures.append(failure)

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def flip(session: aiohttp.ClientSession, admin: int, color: str) -> aiohttp.ClientResponse:
    async with session.post(f"http://127.0.0.1:{admin}/api/v1/switch", json={"active": color}) as resp:
        await resp.read()
        return resp


async def pools(upstream: StartUpstream) -> dict[str, list[str]]:
    return {"blue": [await upstream("blue")], "green": [await upstream("green")]}


# -- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
async def test_upgrade_under_load_drops_nothing(upstream: StartUpstream, tmp_path: Path, workers: int) -> None:
    """Keep-alive and fresh-connection clients, a slow request, a long stream and a WebSocket across the
    handover: no request fails; what was in flight finishes on the old process; new connections go to the
    new one; the live state (a flip made before: generation 2) carries over."""
    proxy = ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN)
    await started(await proxy.start("--workers", str(workers)))
    assert proxy.proc is not None
    old, active, admin = proxy.proc.pid, proxy.ports["active"], proxy.ports["admin"]
    new: Process | None = None
    async with aiohttp.ClientSession() as session:
        try:
            assert (await flip(session, admin, "green")).status == 200
            load = Load(active).start(keep_alive=3, fresh=2)
            slow, stream = RawClient(active), RawClient(active)
            slow_answer = asyncio.ensure_future(slow.request("/slow?ms=2500"))
            stream_answer = asyncio.ensure_future(stream.request("/stream?chunks=40&ms=50"))
            await wait_until(lambda: slow.sent and stream.sent, message="slow request and stream sent")
            ws = await session.ws_connect(f"http://127.0.0.1:{active}/ws")
            await ws.send_str("before")
            assert await ws.receive_str() == "green:before"
            ws_port = int(ws.get_extra_info("sockname")[1])
            assert await served_by(active, local_port(slow)) == old
            assert await served_by(active, local_port(stream)) == old
            assert await served_by(active, ws_port) == old
            await wait_until(lambda: load.ok >= 20, message="load running")

            began = time.monotonic()
            new = await upgrade(proxy, "--workers", str(workers))
            took_over = time.monotonic()
            served_before = load.ok
            await wait_until(lambda: load.ok >= served_before + 50, message="load served by the new process")

            # New connections: the new process.
            fresh = RawClient(active)
            assert (await fresh.request()).headers[b"x-served-by-color"] == b"green"
            assert await served_by(active, local_port(fresh)) == new.pid
            await fresh.close()
            # In flight: finished by the old one.
            await ws.send_str("after")
            assert await ws.receive_str() == "green:after"
            assert supervisor_serving(active, ws_port) == old
            resp = await slow_answer
            assert resp.status == 200 and resp.body == b'"green"'
            resp = await stream_answer
            assert resp.status == 200 and resp.body.count(b"green chunk") == 40
            await slow.close()
            await stream.close()
            await ws.close()
            await load.finish()
            assert load.failures == [], (
                f"upgrade {began:.3f}..{took_over:.3f}",
                load.failures[:10],
                proxy.proc.output,
                new.output,
            )
            longest = load.longest_fresh * 1000
            print(f"requests {load.ok}, failures 0, longest fresh connection + request {longest:.1f} ms")

            async with session.get(f"http://127.0.0.1:{admin}/api/v1/routes") as r:
                assert await r.json() == {"active": "green", "preview": "blue", "generation": 2}
            assert await exited(proxy.proc) == 0  # the old one drained and left by itself
            _, out = await proxy.stop()
            assert "draining and exiting" in out and "Traceback" not in out, out
            # The new one is upgradable in turn (it listens for its successor) and flips.
            assert (await flip(session, admin, "blue")).status == 200
            assert _exists(socket_path(load_config(proxy.path)))
        finally:
            if new is not None:
                code, out = await new.stop()
                assert code == 0, out
            await proxy.stop()


async def test_sigusr2_starts_the_successor_itself(upstream: StartUpstream, tmp_path: Path) -> None:
    proxy = ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN)
    await started(await proxy.start("--workers", "2"))
    proc = proxy.proc
    assert proc is not None
    old, active = proc.pid, proxy.ports["active"]
    old_workers = child_pids(old)
    successor = 0
    try:
        proc.send_signal(signal.SIGUSR2)
        await wait_until(lambda: "took over from pid" in proc.output, 30, message=lambda: f"took over: {proc.output}")
        line = next(x for x in proc.output.splitlines() if "upgrading: started pid" in x)
        successor = int(line.rsplit(" ", 1)[1])
        assert await exited(proc) == 0
        client = RawClient(active)
        assert (await client.request()).status == 200
        assert await served_by(active, local_port(client)) == successor
        await client.close()
        assert len(child_pids(successor)) == 2 and not child_pids(successor) & old_workers
    finally:
        if successor:
            os.kill(successor, signal.SIGTERM)
            await wait_until(lambda: not _alive(successor), 20, message="the successor stopped")
        await proxy.stop()
    assert "Traceback" not in proc.output


def _exists(path: str) -> bool:
    return Path(path).exists()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def test_failed_upgrade_leaves_the_old_one_serving(upstream: StartUpstream, tmp_path: Path) -> None:
    """A new process that cannot start (bad config; a port it must bind is taken after it received the
    sockets) changes nothing: the old one serves, flips, and says why."""
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN).start())
    proc = proxy.proc
    assert proc is not None
    good = proxy.path.read_text()
    admin = proxy.ports["admin"]
    blocker = socket.socket()
    try:
        async with aiohttp.ClientSession() as session:
            proxy.path.write_text(good + "\nbogus: 1\n")
            code, out = await _wait(
                await Process.start(
                    [sys.executable, "-m", "bluegreen", "proxy", "--config", str(proxy.path), "--upgrade"]
                )
            )
            assert code == 2 and out.count("\n") == 1 and "bogus: unknown key" in out, out

            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            taken = blocker.getsockname()[1]
            config = yaml.safe_load(good)
            config["listeners"]["preview"]["port"] = taken
            proxy.path.write_text(yaml.safe_dump(config))
            code, out = await _wait(
                await Process.start(
                    [sys.executable, "-m", "bluegreen", "proxy", "--config", str(proxy.path), "--upgrade"]
                )
            )
            assert code == 1 and out.count("\n") == 1, out
            assert f"port {taken} (127.0.0.1:{taken}) is in use by pid {os.getpid()}" in out, out
            await wait_until(lambda: "upgrade failed" in proc.output, message="the old one says why")
            assert f"port {taken}" in proc.output

            assert proc.returncode is None
            assert (await flip(session, admin, "green")).status == 200  # not frozen
            client = RawClient(proxy.ports["active"])
            assert (await client.request(close=True)).headers[b"x-served-by-color"] == b"green"
    finally:
        blocker.close()
        proxy.path.write_text(good)
        code, out = await proxy.stop()
    assert code == 0 and "Traceback" not in out, out


async def test_incompatible_handover_protocol_is_refused(upstream: StartUpstream, tmp_path: Path) -> None:
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green").start())
    assert proxy.proc is not None
    path = socket_path(load_config(proxy.path))
    try:
        # A newer peer speaking another protocol: the running proxy refuses it, names both, keeps serving.
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'{"op":"hello","protocol":99,"version":"9.9","pid":1}\n')
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        writer.close()
        assert reply["op"] == "refused" and reply["protocol"] == PROTOCOL, reply
        assert f"speaks handover protocol {PROTOCOL}" in reply["reason"] and "speaks 99" in reply["reason"], reply
        async with aiohttp.ClientSession() as session:
            assert (await flip(session, proxy.ports["admin"], "green")).status == 200

        # An old peer speaking another protocol: the new process refuses it in one line.
        (tmp_path / "other").mkdir()
        other = ProxyProcess(tmp_path / "other", await pools(upstream), "blue", "green")
        fake = socket_path(load_config(other.path))

        async def old_peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readline()
            w.write(b'{"op":"sockets","protocol":0,"version":"0.0.1","pid":4242,"roles":[]}\n')
            await w.drain()
            w.close()

        server = await asyncio.start_unix_server(old_peer, fake)
        try:
            code, out = await _wait(
                await Process.start(
                    [sys.executable, "-m", "bluegreen", "proxy", "--config", str(other.path), "--upgrade"]
                )
            )
        finally:
            server.close()
            os.unlink(fake)
        assert code == 1 and out.count("\n") == 1, out
        assert "pid 4242, version 0.0.1) speaks handover protocol 0" in out and f"speaks {PROTOCOL}" in out, out
    finally:
        code, out = await proxy.stop()
    assert code == 0, out


async def test_second_proxy_on_a_taken_port_fails_in_one_line(upstream: StartUpstream, tmp_path: Path) -> None:
    first = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green").start())
    assert first.proc is not None
    try:
        (tmp_path / "second").mkdir()
        second = ProxyProcess(tmp_path / "second", await pools(upstream), "green", "blue")
        config = yaml.safe_load(second.path.read_text())
        config["listeners"]["active"]["port"] = first.ports["active"]
        second.path.write_text(yaml.safe_dump(config))
        code, out = await run_command("proxy", "--config", str(second.path))
        assert code == 1 and out.count("\n") == 1 and "Traceback" not in out, out
        port = first.ports["active"]
        assert f"listeners.active: port {port} (127.0.0.1:{port}) is in use by pid {first.proc.pid} (" in out, out

        config["listeners"]["active"] = {"host": "no-such-host.invalid", "port": free_port()}
        second.path.write_text(yaml.safe_dump(config))
        code, out = await run_command("proxy", "--config", str(second.path))
        assert code == 1 and out.count("\n") == 1, out
        assert "listeners.active: cannot resolve host 'no-such-host.invalid'" in out, out

        # The first proxy kept every live request: nobody else joined its socket.
        for _ in range(12):
            client = RawClient(first.ports["active"])
            assert (await client.request(close=True)).headers[b"x-served-by-color"] == b"blue"
    finally:
        code, out = await first.stop()
    assert code == 0, out


async def test_two_listeners_on_one_address_refused_at_load(tmp_path: Path) -> None:
    proxy = ProxyProcess(tmp_path, {"blue": ["127.0.0.1:9"]}, "blue", None)
    config = yaml.safe_load(proxy.path.read_text())
    port = config["listeners"]["active"]["port"]
    config["listeners"]["preview"] = {"host": "0.0.0.0", "port": port}
    proxy.path.write_text(yaml.safe_dump(config))
    code, out = await run_command("proxy", "--config", str(proxy.path))
    assert code == 2 and out.count("\n") == 1, out
    assert f"listeners.preview.port: 0.0.0.0:{port} is already the address of listeners.active" in out, out

    config["listeners"]["preview"]["port"] = free_port()
    config["admin"]["port"] = port
    proxy.path.write_text(yaml.safe_dump(config))
    code, out = await run_command("proxy", "--config", str(proxy.path))
    assert code == 2 and f"admin.port: 127.0.0.1:{port} is already the address of listeners.active" in out, out


async def test_flips_during_a_handover_are_refused_or_served_by_both(upstream: StartUpstream, tmp_path: Path) -> None:
    """Flips back and forth across an upgrade: each is refused with 503 + Retry-After, or answered 200 and
    then served (by whichever process accepts the next connection); none is lost."""
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN).start())
    admin, active = proxy.ports["admin"], proxy.ports["active"]
    new: Process | None = None
    refused, applied, after, wrong = 0, 0, 0, []
    color = "blue"
    try:
        async with aiohttp.ClientSession() as session:
            upgrading = asyncio.ensure_future(upgrade(proxy))
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and after < 3:  # until 3 flips went through after the handover
                after += upgrading.done()
                target = "green" if color == "blue" else "blue"
                try:
                    resp = await flip(session, admin, target)
                except aiohttp.ClientConnectionError:
                    continue  # the admin socket's connection went with the old process: the flip was not made
                if resp.status == 503:
                    assert resp.headers.get("Retry-After") == "1", resp.headers
                    refused += 1
                    continue
                assert resp.status == 200, resp.status
                applied += 1
                color = target
                client = RawClient(active)
                got = (await client.request(close=True)).headers[b"x-served-by-color"].decode()
                if got != color:
                    wrong.append((applied, color, got))
            new = await upgrading
            async with session.get(f"http://127.0.0.1:{admin}/api/v1/routes") as r:
                routes = await r.json()
        assert wrong == []
        assert refused >= 1, "the handover window was not exercised"
        assert routes["active"] == color and routes["generation"] == 1 + applied, (routes, applied)
    finally:
        if new is not None:
            await new.stop()
        await proxy.stop()


async def test_killed_worker_restarts_on_the_same_listening_socket(upstream: StartUpstream, tmp_path: Path) -> None:
    """kill -9 the only worker under load: the supervisor holds the listening socket (same inode before and
    after), so connections wait in its backlog for the restarted worker and none is refused."""
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green").start())
    assert proxy.proc is not None
    active, supervisor = proxy.ports["active"], proxy.proc.pid
    try:
        inode = listening_inode(active)
        assert inode is not None
        (worker,) = child_pids(supervisor)
        load = Load(active).start(keep_alive=2, fresh=3)
        await wait_until(lambda: load.ok >= 20, message="load running")
        os.kill(worker, signal.SIGKILL)
        await wait_until(lambda: bool(child_pids(supervisor) - {worker}), 15, message="the worker restarted")
        served = load.ok
        await wait_until(lambda: load.ok >= served + 50, message="load served by the restarted worker")
        await load.finish()
        assert listening_inode(active) == inode
        refused = [f for f in load.failures if "ConnectionRefused" in f]
        assert refused == [], load.failures
        # Only the connections the killed worker held can have failed: at most one request each.
        assert len(load.failures) <= 5, load.failures
        print(f"requests {load.ok}, failures {len(load.failures)} (connections of the killed worker), refused 0")
    finally:
        code, out = await proxy.stop()
    assert code == 0, out


async def test_upgrade_takes_over_fleet_membership(upstream: StartUpstream, tmp_path: Path) -> None:
    """In a fleet (etcd), the new process takes the old one's member id and lease: the fleet sees one member
    throughout, and a flip made on another proxy after the handover is acknowledged and served by the new one."""
    etcd = await EtcdProcess(tmp_path / "etcd").start()
    proxies: list[ProxyProcess] = []
    new: Process | None = None
    try:
        for i in range(2):
            (tmp_path / f"p{i}").mkdir()
            state = {"backend": "etcd", "endpoints": [etcd.endpoint], "prefix": "/bg-up/", "lease_ttl": "2s"}
            state |= {"name": "p1"} if i else {}
            colors = await pools(upstream)
            proxies.append(ProxyProcess(tmp_path / f"p{i}", colors, "blue", "green", state=state, **DRAIN))
        for proxy in proxies:
            await started(await proxy.start())
        p0, p1 = proxies
        async with aiohttp.ClientSession() as session:

            async def fleet(proxy: ProxyProcess) -> dict[str, Any]:
                async with session.get(f"http://127.0.0.1:{proxy.ports['admin']}/api/v1/fleet") as r:
                    body: dict[str, Any] = await r.json()
                    return body

            assert (await flip(session, p1.ports["admin"], "green")).status == 200
            before = await fleet(p0)
            new = await upgrade(p0)
            after = await fleet(p0)
            assert (after["self"], after["lease"]) == (before["self"], before["lease"]), (before, after)
            assert sorted(m["id"] for m in after["members"]) == sorted([before["self"], "p1"])
            member = next(m for m in after["members"] if m["id"] == before["self"])
            assert member["pid"] == new.pid and member["version"] == 2

            async with session.post(
                f"http://127.0.0.1:{p1.ports['admin']}/api/v1/switch", json={"active": "blue"}
            ) as resp:
                assert resp.status == 200
            report = await fleet(p1)
            assert any(m["id"] == before["self"] and m["version"] == 3 for m in report["members"]), report
            client = RawClient(p0.ports["active"])
            assert (await client.request(close=True)).headers[b"x-served-by-color"] == b"blue"
            assert p0.proc is not None and await exited(p0.proc) == 0
    finally:
        if new is not None:
            await new.stop()
        for proxy in proxies:
            if proxy.proc is not None:
                await proxy.stop()
        await etcd.kill()


def _more(load: Load, n: int) -> bool:
    return load.ok >= n


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its children (a supervisor and its workers), KiB."""
    total = 0
    for p in [pid, *child_pids(pid)]:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


class Colors(Load):
    """Load that records when each request started and which pool served it."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.served: list[tuple[float, float, str]] = []  # started, answered, pool

    def answered_ok(self, sent: float, resp: Response) -> None:
        self.served.append((sent, time.monotonic(), resp.headers[b"x-served-by-color"].decode()))


async def test_upgrades_in_a_row_with_flips_between(upstream: StartUpstream, tmp_path: Path) -> None:
    """Ten upgrades in a row under load, a flip after each: no failed request, and no request that began
    after a flip was acknowledged (and ended before the next was sent) served by the other pool, although the
    old process still answers the last request of each of its keep-alive connections: every flip is applied
    by both until it exits."""
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN).start())
    assert proxy.proc is not None
    admin, active = proxy.ports["admin"], proxy.ports["active"]
    generations: list[Process] = []
    flips: list[tuple[float, float, str]] = []  # sent, acknowledged, new active
    memory = [rss_kib(proxy.proc.pid)]
    takeover_ms: list[float] = []
    load = Colors(active).start(keep_alive=3, fresh=2)
    color = "blue"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                begun = time.monotonic()
                generations.append(await upgrade(proxy))
                takeover_ms.append((time.monotonic() - begun) * 1000)
                color = "green" if color == "blue" else "blue"
                sent = time.monotonic()
                resp = await flip(session, admin, color)
                assert resp.status == 200, resp.status
                flips.append((sent, time.monotonic(), color))
                served = load.ok
                await wait_until(partial(_more, load, served + 20), message="load after the flip")
                memory.append(rss_kib(generations[-1].pid))
        await load.finish()
        assert load.failures == [], load.failures[:10]
        wrong = []
        for i, (_, acked, expected) in enumerate(flips):
            until = flips[i + 1][0] if i + 1 < len(flips) else float("inf")
            # Begun after the flip's answer, answered before the next flip was sent: only one pool is right.
            wrong += [(t, c) for t, end, c in load.served if acked <= t and end < until and c != expected]
        assert wrong == [], wrong[:10]
        for process in generations[:-1]:
            assert await exited(process) == 0
        handovers = [int(m) for p in [proxy.proc, *generations] for m in re.findall(r"handover (\d+) ms", p.output)]
        assert len(handovers) == len(generations)
        print(f"handover (sockets sent to old stopped accepting) {min(handovers)}-{max(handovers)} ms")
        print(
            f"requests {load.ok}, upgrades {len(generations)}, failures 0; longest fresh connection + request "
            f"{load.longest_fresh * 1000:.1f} ms; --upgrade to took-over {min(takeover_ms):.0f}-{max(takeover_ms):.0f}"
            f" ms; memory (supervisor + worker, KiB) first {memory[0]}, after each upgrade {memory[1:]}"
        )
    finally:
        if not load.stop.is_set():
            await load.finish()
        for process in generations:
            await process.stop()
        await proxy.stop()


async def test_a_flip_after_the_handover_reaches_the_old_process_connections(
    upstream: StartUpstream, tmp_path: Path
) -> None:
    """Keep-alive connections still open on the draining old process (idle less than a second when it stopped)
    get one more request, answered with `Connection: close`: a flip made on the new process before it is
    routed by the new routes there too, because the new process forwards every change to the old one."""
    proxy = await started(await ProxyProcess(tmp_path, await pools(upstream), "blue", "green", **DRAIN).start())
    assert proxy.proc is not None
    old, active, admin = proxy.proc.pid, proxy.ports["active"], proxy.ports["admin"]
    clients = [RawClient(active) for _ in range(6)]
    new: Process | None = None
    try:
        for client in clients:
            assert (await client.request()).status == 200
        upgrading = asyncio.ensure_future(upgrade(proxy))
        deadline, turn = time.monotonic() + 30, 0
        proc = proxy.proc
        # Each connection busy every 60 ms or so, until the old process says it stopped accepting.
        while "serves now" not in proc.output and not upgrading.done() and time.monotonic() < deadline:
            client = clients[turn % len(clients)]
            turn += 1
            if client.writer is not None:
                await client.request()
            await asyncio.sleep(0.01)
        open_ones = [c for c in clients if c.writer is not None]
        owners = supervisors_serving(active, [local_port(c) for c in open_ones])
        still_old = [c for c in open_ones if owners.get(local_port(c)) == old]
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # the new process accepts changes once it heard the old one stopped
                answer = await flip(session, admin, "green")
                if answer.status != 503:
                    break
                await asyncio.sleep(0.01)
            assert answer.status == 200
        tested = 0
        for client in still_old:
            try:
                resp = await client.request()
            except (OSError, asyncio.IncompleteReadError):
                continue  # closed by the old one meanwhile (idle for its grace): nothing to route
            tested += 1
            assert resp.headers[b"x-served-by-color"] == b"green"
            assert resp.headers[b"connection"] == b"close"
        assert tested >= 1, f"none still open on the old process: {len(open_ones)} open, {owners}, old {old}"
        new = await upgrading
        print(f"{tested} of {len(clients)} keep-alive connections served once more by the old process, by the flip")
    finally:
        for client in clients:
            await client.close()
        if new is not None:
            await new.stop()
        await proxy.stop()


async def test_upgrade_without_a_running_proxy_says_so(tmp_path: Path) -> None:
    proxy = ProxyProcess(tmp_path, {"blue": ["127.0.0.1:9"]}, "blue", None)
    code, out = await run_command("proxy", "--config", str(proxy.path), "--upgrade")
    path = socket_path(load_config(proxy.path))
    assert code == 1 and out.count("\n") == 1, out
    assert f"cannot upgrade: no running proxy to upgrade at {path}" in out, out
