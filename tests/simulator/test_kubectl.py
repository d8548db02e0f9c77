"""The real `kubectl` against the demo's Kubernetes API (simulator/web/kube.py), through the kubeconfig it writes.

Every kubectl call is bounded (`--request-timeout`, and a process timeout); watches are bounded by
`timeout` on the server side (`--request-timeout` ends kubectl's watch too). kubectl's discovery cache
goes to a temporary HOME, never the user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.demo import BUNDLED_MANIFESTS, Demo, DemoConfig, _banner
from simulator.k8s.objects import Rollout
from simulator.manifests import load_path
from simulator.workloads.kubelet import PodTiming
from tests.simulator.harness import EXAMPLES
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("kubectl_installed")]


@pytest.fixture
def kubectl_installed() -> None:
    """The real kubectl is part of these tests: scripts/system-deps installs it, never skipped."""
    assert shutil.which("kubectl"), "kubectl is not installed (Debian: kubernetes-client; scripts/system-deps)"


NAME = "rollout-bluegreen"
EXAMPLE = EXAMPLES / "rollouts-demo" / "examples" / "blue-green"
CALL_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def running_demo(token: str | None = None) -> AsyncIterator[Demo]:
    config = DemoConfig(
        active_port=0,
        preview_port=0,
        admin_port=0,
        kube_port=0,
        token=token,
        timing=PodTiming(startup=0.2, termination_grace=1.0),
        health_interval="200ms",
    )
    demo = Demo(load_path(BUNDLED_MANIFESTS), config)
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    async with running_demo() as running:
        yield running


class Kubectl:
    def __init__(self, home: Path, kubeconfig: Path | None, server: str | None = None) -> None:
        self.env = {**os.environ, "HOME": str(home)}
        self.env.pop("KUBECONFIG", None)
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)
        self.server = server

    async def __call__(self, *args: str, check: bool = True, stdin: bytes | None = None) -> tuple[int, str, str]:
        argv = ["kubectl", "--request-timeout", "10s", *(["--server", self.server] if self.server else []), *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), CALL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        code = proc.returncode if proc.returncode is not None else -1
        if check:
            assert code == 0, f"{' '.join(argv)} exited {code}: {err.decode()}"
        return code, out.decode(), err.decode()

    async def json(self, *args: str) -> dict[str, object]:
        _, out, _ = await self(*args, "-o", "json")
        data: dict[str, object] = json.loads(out)
        return data


@pytest.fixture
def kubectl(demo: Demo, tmp_path: Path) -> Kubectl:
    assert demo.kubeconfig is not None
    return Kubectl(tmp_path, demo.kubeconfig)


async def healthy(kubectl: Kubectl, name: str = NAME) -> bool:
    _, out, _ = await kubectl("get", "rollout", name, "-o", "jsonpath={.status.phase}")
    return out == "Healthy"


async def test_get_describe_and_the_kubeconfig(demo: Demo, kubectl: Kubectl) -> None:
    assert demo.kubeconfig is not None and demo.kubeconfig.stat().st_mode & 0o077 == 0
    await wait_until(lambda: healthy(kubectl), 15, 0.2, message="the demo's rollout Healthy")
    _, out, _ = await kubectl("get", "rollouts,rs,pods,svc")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DESIRED", "CURRENT", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:5] == [f"rollout.argoproj.io/{NAME}", "2", "2", "2", "2"]
    assert any(line.startswith(f"replicaset.apps/{NAME}-") for line in lines)
    pods = [line.split() for line in lines if line.startswith("pod/")]
    assert len(pods) == 2 and all(p[1:3] == ["1/1", "Running"] for p in pods), out
    assert any(line.startswith(f"service/{NAME}-active ") and "ClusterIP" in line for line in lines)

    _, out, _ = await kubectl("describe", "rollout", NAME)
    assert f"Name:         {NAME}" in out and "Kind:         Rollout" in out
    assert "Events:" in out and "Switched selector for service" in out

    # `--server` alone works too (no kubeconfig at all).
    bare = Kubectl(Path(kubectl.env["HOME"]), None, demo.kube_server)
    _, out, _ = await bare("get", "ro", "-n", "default")
    assert NAME in out

    # A missing object is worded as the API server words it.
    code, _, err = await kubectl("get", "rollout", "nope", check=False)
    assert code == 1 and 'Error from server (NotFound): rollouts.argoproj.io "nope" not found' in err


async def test_apply_an_argo_example_patch_and_delete(demo: Demo, kubectl: Kubectl) -> None:
    files = ["bluegreen-rollout.yaml", "bluegreen-service.yaml", "bluegreen-preview-service.yaml"]
    args = [arg for f in files for arg in ("-f", str(EXAMPLE / f))]
    _, out, _ = await kubectl("apply", *args)
    assert out.splitlines() == [
        "rollout.argoproj.io/bluegreen-demo created",
        "service/bluegreen-demo created",
        "service/bluegreen-demo-preview created",
    ]
    _, out, _ = await kubectl("apply", *args)
    assert out.count("unchanged") == 3, out
    await wait_until(lambda: healthy(kubectl, "bluegreen-demo"), 20, 0.2, message="bluegreen-demo Healthy")

    # Merge patch, JSON patch and (for a Service) strategic merge patch.
    await kubectl("patch", "rollout", "bluegreen-demo", "--type", "merge", "-p", '{"spec":{"paused":true}}')
    _, out, _ = await kubectl("get", "rollout", "bluegreen-demo", "-o", "jsonpath={.spec.paused}")
    assert out == "true"
    _, out, _ = await kubectl(
        "patch", "rollout", "bluegreen-demo", "--type", "merge", "-p", '{"spec":{"paused":false}}'
    )
    assert out.strip() == "rollout.argoproj.io/bluegreen-demo patched"
    await kubectl(
        "patch",
        "rollout",
        "bluegreen-demo",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/metadata/labels","value":{"team":"a"}}]',
    )
    _, out, _ = await kubectl("get", "ro", "-l", "team=a", "-o", "name")
    assert out.split() == ["rollout.argoproj.io/bluegreen-demo"]
    await kubectl("patch", "svc", "bluegreen-demo", "-p", '{"metadata":{"labels":{"tier":"web"}}}')
    _, out, _ = await kubectl("get", "svc", "-l", "tier=web", "-o", "name")
    assert out.split() == ["service/bluegreen-demo"]

    # A stale resourceVersion is a conflict.
    rollout = await kubectl.json("get", "rollout", "bluegreen-demo")
    stale: Any = json.loads(json.dumps(rollout))
    stale["metadata"]["resourceVersion"] = "1"
    code, _, err = await kubectl("replace", "-f", "-", check=False, stdin=json.dumps(stale).encode())
    assert code == 1 and "Conflict" in err and "the object has been modified" in err

    # delete: the Rollout with what it owns, and kubectl's wait for it to be gone ends.
    _, out, _ = await kubectl("delete", "rollout", "bluegreen-demo")
    assert out.strip() == 'rollout.argoproj.io "bluegreen-demo" deleted'
    _, out, _ = await kubectl("get", "rs,pods", "-o", "name")
    assert "bluegreen-demo" not in out
    await kubectl("delete", "-f", str(EXAMPLE / "bluegreen-service.yaml"))
    assert demo.cluster is not None and demo.cluster.store.find(Rollout, "bluegreen-demo") is None


async def test_watch_a_rollout_through_a_new_revision(demo: Demo, kubectl: Kubectl) -> None:
    await wait_until(lambda: healthy(kubectl), 15, 0.2, message="the demo's rollout Healthy")
    rv = (await kubectl.json("get", "rollout", NAME))["metadata"]["resourceVersion"]  # type: ignore[index]
    watch = asyncio.create_task(kubectl("get", "rollout", NAME, "-w", "--request-timeout", "4s", check=False))
    kube = f"{demo.kube_server}/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/{NAME}"
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "rollouts-demo", "image": "argoproj/rollouts-demo:green"}]}}
        }
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        # The raw watch protocol: from a resourceVersion, one JSON event a line, bounded by timeoutSeconds.
        events = f"{demo.kube_server}/apis/argoproj.io/v1alpha1/namespaces/default/rollouts"
        params = {
            "watch": "true",
            "resourceVersion": str(rv),
            "timeoutSeconds": "3",
            "fieldSelector": f"metadata.name={NAME}",
        }
        async with http.get(events, params=params) as stream:
            async with http.patch(kube, json=patch, headers={"Content-Type": "application/merge-patch+json"}) as r:
                assert r.status == 200, await r.text()
            first = json.loads(await stream.content.readline())
        assert first["type"] == "MODIFIED" and int(first["object"]["metadata"]["resourceVersion"]) > int(str(rv))
        image = first["object"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "argoproj/rollouts-demo:green"
    code, out, _ = await watch
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:2] == ["NAME", "DESIRED"] and len(rows) >= 3, out  # the header, the object, its changes
    assert all(r[0] == NAME for r in rows[1:])
    currents = {r[2] for r in rows[1:]}
    assert "4" in currents or len(rows) > 3, out  # the preview stack came up while it watched


async def test_a_token_protected_demo_serves_no_unauthenticated_kubernetes_api(tmp_path: Path) -> None:
    """kubectl sends no bearer token over plain HTTP, so with BLUEGREEN_ADMIN_TOKEN the API is off, not open."""
    async with running_demo(token="s3cret") as demo:
        assert demo.kubeconfig is None and demo.kube_port is None
        assert "Kubernetes API   off" in _banner(demo, "test")
