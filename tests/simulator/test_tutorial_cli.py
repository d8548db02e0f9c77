"""Argo's tutorials as typed: every `kubectl argo rollouts` verb of the docs/simulator.md table, run as the
`bluegreen` command (a real subprocess) against the simulator's API on a virtual cluster, verb by verb."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from simulator.cluster import Cluster
from simulator.k8s.objects import Pod, Rollout, Service
from simulator.web.api import setup_api
from tests.simulator.harness import EXAMPLES, read

ROOT = Path(__file__).resolve().parents[2]
CANONICAL = EXAMPLES / "argo-rollouts" / "examples" / "rollout-bluegreen.yaml"
NAME = "rollout-bluegreen"


class Cli:
    def __init__(self, cluster: Cluster, base: str) -> None:
        self.cluster = cluster
        self.env = {**os.environ, "BLUEGREEN_ADMIN": base, "PYTHONPATH": str(ROOT)}
        self.env.pop("BLUEGREEN_ADMIN_TOKEN", None)

    async def __call__(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bluegreen",
            *argv,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *argv: str, stdin: str | None = None) -> str:
        code, out, err = await self(*argv, stdin=stdin)
        assert code == 0, f"{argv}: {code} {out} {err}"
        return out

    def phase(self) -> tuple[str, str]:
        st = self.cluster.store.get(Rollout, NAME).status
        assert st is not None
        return str(st.phase), st.message


@pytest.fixture
async def cli() -> AsyncIterator[Cli]:
    cluster = Cluster.virtual()
    app = web.Application()
    setup_api(app, cluster)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Cli(cluster, f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


async def test_the_blue_green_tutorial_as_typed(cli: Cli) -> None:
    c = cli
    out = await c.ok("apply", "-f", str(CANONICAL))
    assert out.splitlines()[0] == "rollout.argoproj.io/rollout-bluegreen created"
    await c.cluster.advance(10)
    # get rollout NAME (the noun), get ro, get NAME; --no-color
    for argv in (("get", "rollout", NAME), ("get", "ro", NAME, "--no-color"), ("get", NAME)):
        tree = await c.ok("rollouts", *argv)
        assert tree.startswith(f"Name:            {NAME}\n") and "✔ Healthy" in tree
    # list rollouts, list rollouts -A
    listed = (await c.ok("rollouts", "list", "rollouts")).splitlines()
    assert listed[0].split() == ["NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED"] + [
        "UP-TO-DATE",
        "AVAILABLE",
    ]
    assert listed[1].split() == [NAME, "BlueGreen", "Healthy", "-", "-", "2/2", "2", "2", "2"]
    every = (await c.ok("rollouts", "list", "rollouts", "-A")).splitlines()
    assert every[0].split()[:2] == ["NAMESPACE", "NAME"] and every[1].split()[:3] == ["default", NAME, "BlueGreen"]
    # set image
    out = await c.ok("rollouts", "set", "image", NAME, "rollouts-demo=argoproj/rollouts-demo:yellow")
    assert out == f'rollout "{NAME}" image updated\n'
    await c.cluster.advance(10)
    # status --watch=false / -w=false: once; status -t: the watch gives up
    for flag in ("--watch=false", "-w=false", "--watch=0"):
        assert await c("rollouts", "status", NAME, flag) == (0, "Paused - BlueGreenPause\n", "")
    assert await c("rollouts", "status", NAME, "-t", "300ms") == (
        1,
        "Paused - BlueGreenPause\n",
        "Error: Rollout status watch exceeded timeout\n",
    )
    # promote, then status (default: watch until Healthy)
    assert await c.ok("rollouts", "promote", NAME) == f"rollout '{NAME}' promoted\n"
    await c.cluster.advance(40)
    assert await c("rollouts", "status", NAME, "--timeout", "10s") == (0, "Healthy\n", "")
    # pause, then promote resumes
    assert await c.ok("rollouts", "pause", NAME) == f"rollout '{NAME}' paused\n"
    await c.cluster.settle()
    assert await c("rollouts", "status", NAME, "--watch", "false") == (0, "Paused - manually paused\n", "")
    await c.ok("rollouts", "promote", NAME)
    await c.cluster.settle()
    assert c.phase() == ("Healthy", "")
    # a new update, abort, retry rollout NAME (noun), promote --full
    await c.ok("rollouts", "set", "image", NAME, "*=argoproj/rollouts-demo:green")
    await c.cluster.advance(10)
    assert await c.ok("rollouts", "abort", NAME) == f"rollout '{NAME}' aborted\n"
    await c.cluster.settle()
    assert c.phase()[0] == "Degraded"
    assert await c.ok("rollouts", "retry", "rollout", NAME) == f"rollout '{NAME}' retried\n"
    await c.cluster.advance(10)
    assert c.phase() == ("Paused", "BlueGreenPause")
    assert await c.ok("rollouts", "promote", NAME, "--full") == f"rollout '{NAME}' fully promoted\n"
    await c.cluster.advance(10)
    assert c.phase() == ("Healthy", "")
    # undo --to-revision: back to yellow (revision 2) as revision 4
    assert await c.ok("rollouts", "undo", NAME, "--to-revision", "2") == f"rollout '{NAME}' undo\n"
    await c.cluster.advance(10)
    rollout = c.cluster.store.get(Rollout, NAME)
    assert rollout.spec["template"]["spec"]["containers"][0]["image"] == "argoproj/rollouts-demo:yellow"
    await c.ok("rollouts", "promote", NAME)
    await c.cluster.advance(40)
    # restart [--in]: every pod replaced, no new revision
    before = {p.name for p in c.cluster.store.list(Pod)}
    assert await c.ok("rollouts", "restart", NAME) == f"rollout '{NAME}' restarts in 0s\n"
    await c.cluster.advance(30)
    assert c.phase() == ("Healthy", "") and before.isdisjoint(p.name for p in c.cluster.store.list(Pod))
    assert await c.ok("rollouts", "restart", NAME, "--in", "10s") == f"rollout '{NAME}' restarts in 10s\n"


async def test_get_watch_runs_until_interrupted(cli: Cli) -> None:
    await cli.ok("apply", "-f", str(CANONICAL))
    await cli.cluster.advance(10)
    for argv in (("get", "rollout", NAME, "-w"), ("get", "-w", "rollout", NAME), ("get", "rollout", NAME, "--watch")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bluegreen",
            "rollouts",
            *argv,
            env=cli.env,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_interruptible,
        )
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert first.decode() == f"Name:            {NAME}\n", argv
        await asyncio.sleep(0.3)
        assert proc.returncode is None  # still watching
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 130


def _interruptible() -> None:
    """Ctrl-C as a terminal delivers it: a test run started in the background (a script's `cmd &`) ignores
    SIGINT, and a child inherits an ignored signal, so the watch would never see it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_namespaces(cli: Cli) -> None:
    other = read(CANONICAL).replace("metadata:\n  name:", "metadata:\n  namespace: team-a\n  name:")
    await cli.ok("apply", "-f", "-", stdin=other)
    await cli.cluster.advance(10)
    assert cli.cluster.store.find(Rollout, NAME, "team-a") is not None
    assert cli.cluster.store.find(Rollout, NAME) is None
    code, _, err = await cli("rollouts", "get", "rollout", NAME)
    assert (code, err) == (1, f'bluegreen: rollouts.argoproj.io "{NAME}" not found\n')
    for argv in (("-n", "team-a", "get", "rollout", NAME), ("get", "rollout", NAME, "-n", "team-a")):
        assert "✔ Healthy" in await cli.ok("rollouts", *argv)
    await cli.ok("rollouts", "-n", "team-a", "set", "image", NAME, "*=argoproj/rollouts-demo:red")
    await cli.cluster.advance(10)
    assert await cli("rollouts", "status", NAME, "-n", "team-a", "-w=false") == (0, "Paused - BlueGreenPause\n", "")
    assert await cli.ok("rollouts", "promote", NAME, "--namespace", "team-a") == f"rollout '{NAME}' promoted\n"
    assert (await cli.ok("rollouts", "list", "rollouts", "-n", "team-a")).splitlines()[1].startswith(NAME)
    assert await cli("rollouts", "list", "rollouts") == (0, "", 'No resources found in "default" namespace.\n')


async def test_apply_and_delete_take_several_files_folders_and_stdin(cli: Cli, tmp_path: Path) -> None:
    docs = read(CANONICAL).split("\n---\n")
    (tmp_path / "a.yaml").write_text(docs[0])
    folder = tmp_path / "services"
    folder.mkdir()
    (folder / "active.yaml").write_text(docs[1])
    out = await cli.ok("apply", "-f", str(tmp_path / "a.yaml"), "-f", str(folder), "-f", "-", stdin=docs[2])
    assert out.splitlines() == [
        "rollout.argoproj.io/rollout-bluegreen created",
        "service/rollout-bluegreen-active created",
        "service/rollout-bluegreen-preview created",
    ]
    await cli.cluster.advance(10)
    assert len(cli.cluster.store.list(Pod)) == 2
    out = await cli.ok("delete", "-f", str(tmp_path / "a.yaml"), "-f", str(folder))
    assert out.splitlines() == [
        'rollout.argoproj.io "rollout-bluegreen" deleted',
        'service "rollout-bluegreen-active" deleted',
    ]
    await cli.cluster.settle()
    assert cli.cluster.store.list(Rollout) == [] and cli.cluster.store.list(Pod) == []  # with what it owned
    assert [s.name for s in cli.cluster.store.list(Service)] == ["rollout-bluegreen-preview"]
    code, out, err = await cli("delete", "-f", str(CANONICAL))
    assert code == 1
    assert out == 'service "rollout-bluegreen-preview" deleted\n'
    assert err.startswith('Error from server (NotFound): rollouts.argoproj.io "rollout-bluegreen" not found')


async def test_lint_version_completion_need_no_cluster(tmp_path: Path) -> None:
    cli = Cli(Cluster.virtual(), "http://127.0.0.1:9")  # nothing listens there
    assert await cli("rollouts", "lint", "-f", str(CANONICAL)) == (0, "", "")
    bad = read(CANONICAL).replace("app: rollout-bluegreen\n  template", "app: other\n  template", 1)
    (tmp_path / "bad.yaml").write_text(bad)
    code, out, err = await cli("rollouts", "lint", "-f", str(tmp_path / "bad.yaml"))
    assert (code, out) == (1, "")
    assert err == (
        'Error: The Rollout "rollout-bluegreen" is invalid: spec.selector: `selector` does not match template '
        "`labels`\n"
    )
    (tmp_path / "broken.yaml").write_text(bad.replace("replicas: 2", "replicas: many"))
    code, _, err = await cli("rollouts", "lint", "-f", str(tmp_path / "broken.yaml"))
    assert code == 1 and "spec.replicas" in err and err.count("\n") == 1
    version = await cli.ok("rollouts", "version")
    assert version.startswith("bluegreen-rollouts: v") and "Argo Rollouts 9f8d111d8f8e" in version
    assert (await cli.ok("rollouts", "version", "--short")).count("\n") == 1
    script = await cli.ok("rollouts", "completion", "bash")

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _bluegreen; echo "${{COMPREPLY[@]}}"'
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, env=cli.env)
        return done.stdout.split()

    assert complete("bluegreen", "roll") == ["rollouts"]
    assert complete("bluegreen", "rollouts", "pro") == ["promote"]
    assert complete("bluegreen", "rollouts", "get", "ro") == ["rollout"]
    assert complete("bluegreen", "rollouts", "promote", "--f") == ["--full"]
    assert complete("bluegreen", "rollouts", "status", "--ti") == ["--timeout"]
    assert "autoload -U +X bashcompinit" in await cli.ok("rollouts", "completion", "zsh")
    assert "complete -c bluegreen" in await cli.ok("rollouts", "completion", "fish")
