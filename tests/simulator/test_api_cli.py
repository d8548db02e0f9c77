"""The simulator's HTTP API and the `bluegreen apply` / `rollouts ...` client, against a virtual cluster."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from simulator.cluster import Cluster
from simulator.web import client as sim_client
from simulator.web.api import setup_api
from simulator.web.client import AdminClient, ClientError
from tests.simulator.harness import EXAMPLES
from tests.support import wait_until

CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"
NAME = "rollout-bluegreen"


@pytest.fixture
async def served() -> AsyncIterator[tuple[Cluster, str]]:
    cluster = Cluster.virtual()
    app = web.Application()
    setup_api(app, cluster)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield cluster, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_apply_get_promote_through_the_api(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    out, err = io.StringIO(), io.StringIO()
    async with AdminClient(base) as client:
        assert await sim_client.apply_files(client, str(CANONICAL), out, err) == 0
        assert out.getvalue().splitlines() == [
            "rollout.argoproj.io/rollout-bluegreen created",
            "service/rollout-bluegreen-active created",
            "service/rollout-bluegreen-preview created",
        ]
        await cluster.advance(10)
        out = io.StringIO()
        await sim_client.apply_files(client, str(CANONICAL), out, err)
        assert out.getvalue().count("unchanged") == 3
        body = {"container": "*", "image": "argoproj/rollouts-demo:green"}
        out = io.StringIO()
        await sim_client.rollout_action(client, NAME, "image", body, out)
        assert out.getvalue() == 'rollout "rollout-bluegreen" image updated\n'
        await cluster.advance(10)
        out = io.StringIO()
        await sim_client.get(client, NAME, output="tree", watch=False, color=False, out=out)
        tree = out.getvalue()
        assert "Status:          ॥ Paused" in tree and "# revision:2" in tree
        assert "argoproj/rollouts-demo:green (preview)" in tree
        out = io.StringIO()
        await sim_client.get(client, NAME, output="json", watch=False, color=False, out=out)
        data = json.loads(out.getvalue())
        assert data["rollout"]["status"]["phase"] == "Paused"
        assert len(data["replicaSets"]) == 2 and len(data["pods"]) == 4
        out = io.StringIO()
        await sim_client.rollout_action(client, NAME, "promote", {"full": False}, out)
        assert out.getvalue() == "rollout 'rollout-bluegreen' promoted\n"
        await cluster.advance(5)
        out, err = io.StringIO(), io.StringIO()
        assert await sim_client.status(client, NAME, give_up_after="", watch=True, out=out, err=err) == 0
        assert out.getvalue() == "Healthy\n"


async def test_status_waits_through_pause_and_fails_on_degraded(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    async with AdminClient(base) as client:
        await sim_client.apply_files(client, str(CANONICAL), io.StringIO(), io.StringIO())
        await cluster.advance(10)
        await sim_client.rollout_action(
            client, NAME, "image", {"container": "rollouts-demo", "image": "argoproj/rollouts-demo:red"}, io.StringIO()
        )
        await cluster.advance(10)
        out, err = io.StringIO(), io.StringIO()
        # Paused does not end the watch (Argo #1389): only the timeout does.
        code = await sim_client.status(client, NAME, give_up_after="300ms", watch=True, out=out, err=err, interval=0.05)
        assert (code, out.getvalue(), err.getvalue()) == (
            1,
            "Paused - BlueGreenPause\n",
            "Error: Rollout status watch exceeded timeout\n",
        )

        out, err = io.StringIO(), io.StringIO()

        async def abort_once_watching() -> None:
            await wait_until(lambda: "Paused" in out.getvalue(), message="the watch under way")
            await sim_client.rollout_action(client, NAME, "abort", {}, io.StringIO())
            await cluster.settle()

        aborting = asyncio.create_task(abort_once_watching())
        code = await sim_client.status(client, NAME, give_up_after="", watch=True, out=out, err=err, interval=0.05)
        await aborting
        assert code == 1
        assert out.getvalue().splitlines()[-1] == "Degraded"
        assert err.getvalue() == (
            "Error: The rollout is in a degraded state with message: "
            "RolloutAborted: Rollout aborted update to revision 2\n"
        )


async def test_api_errors_are_json_and_harmless(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v1/manifests", data="kind: Gadget\nmetadata: {name: g}\n") as r:
            assert r.status == 400
            assert (await r.json())["error"].startswith("<request>#1: Gadget/g: kind: unknown kind 'Gadget'")
        async with http.get(f"{base}/api/v1/rollouts/nope") as r:
            assert (r.status, await r.json()) == (404, {"error": 'rollouts.argoproj.io "nope" not found'})
        async with http.post(f"{base}/api/v1/rollouts/nope/promote", data="{not json") as r:
            assert r.status == 400
        async with http.post(f"{base}/api/v1/pods/nope/crash") as r:
            assert r.status == 404
    async with AdminClient(base) as client:
        with pytest.raises(ClientError, match="not found"):
            await sim_client.rollout_action(client, "nope", "abort", {}, io.StringIO())
        with pytest.raises(ClientError, match="no such file"):
            await sim_client.apply_files(client, "/nonexistent.yaml", io.StringIO(), io.StringIO())
    await cluster.settle()  # the cluster is unharmed


async def test_event_stream(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        await stream.content.readline()  # ": connected"
        await stream.content.readline()
        async with http.post(f"{base}/api/v1/manifests", data=CANONICAL.read_bytes()) as r:
            assert r.status == 200
        lines = [(await stream.content.readline()).decode().strip() for _ in range(2)]
        assert lines[0] == "event: change"
        assert json.loads(lines[1].removeprefix("data: "))["kind"] == "Rollout"


async def test_cli_exit_codes_and_one_line_errors(served: tuple[Cluster, str]) -> None:
    _, base = served
    env = {**os.environ, "BLUEGREEN_ADMIN": base, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bluegreen",
        "rollouts",
        "promote",
        "missing",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1
    assert (out, err.decode()) == (b"", 'bluegreen: rollouts.argoproj.io "missing" not found\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bluegreen",
        "rollouts",
        "get",
        "x",
        "--admin",
        "http://127.0.0.1:9",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1 and err.decode().count("\n") == 1
    assert err.decode().startswith("bluegreen: cannot reach the admin API at http://127.0.0.1:9")


def test_read_manifests_joins_a_directory_and_skips_kustomization(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("kind: B\n")
    (tmp_path / "a.yml").write_text("kind: A\n")
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    (tmp_path / "notes.txt").write_text("not yaml\n")
    assert sim_client.read_manifests(str(tmp_path)) == "kind: A\n\n---\nkind: B\n"


async def test_event_stream_carries_argo_events(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/v1/events") as stream:
        await stream.content.readline()
        await stream.content.readline()
        async with http.post(f"{base}/api/v1/manifests", data=CANONICAL.read_bytes()) as r:
            assert r.status == 200
        await cluster.settle()
        events: list[dict[str, str]] = []
        previous = ""
        while len(events) < 2:
            line = (await stream.content.readline()).decode().strip()
            if line.startswith("data: ") and previous == "event: event":
                events.append(json.loads(line.removeprefix("data: ")))
            previous = line
        assert [(e["kind"], e["reason"]) for e in events] == [
            ("Rollout", "RolloutUpdated"),
            ("Rollout", "NewReplicaSetCreated"),
        ]


class Screen(io.StringIO):
    """Captured output that can be awaited: `until(text)` returns once `text` was written."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def until(self, text: str) -> None:
        while text not in self.getvalue():
            self.changed.clear()
            await self.changed.wait()


async def test_get_watch_redraws_on_events_not_on_a_timer(served: tuple[Cluster, str]) -> None:
    cluster, base = served
    out, err = io.StringIO(), io.StringIO()
    async with AdminClient(base) as client:
        assert await sim_client.apply_files(client, str(CANONICAL), out, err) == 0
        await cluster.advance(10)
        watched = Screen()
        # A 60 s refresh: only the event stream can make it redraw within the test's time.
        task = asyncio.ensure_future(
            sim_client.get(client, NAME, output="json", watch=True, color=False, out=watched, interval=60)
        )
        try:
            async with asyncio.timeout(5):
                await watched.until("Healthy")
                await sim_client.rollout_action(
                    client, NAME, "image", {"container": "*", "image": "argoproj/rollouts-demo:green"}, io.StringIO()
                )
                await cluster.advance(10)
                await watched.until('"Paused"')
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
