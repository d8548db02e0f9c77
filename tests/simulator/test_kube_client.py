"""The official Python `kubernetes` client against the demo's Kubernetes API: what a script or an operator
written in Python does against a real cluster works against the simulator (issue 18, item 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client, watch

from simulator.demo import Demo
from tests.simulator.test_kubectl import NAME, running_demo
from tests.support import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    async with running_demo() as running:
        yield running


def names(items: Any) -> list[str]:
    return [str(item.metadata.name) for item in items if item.metadata is not None]


def api_client(demo: Demo) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{demo.kube_port}"
    return client.ApiClient(configuration)


async def test_python_client_lists_gets_patches_and_watches(demo: Demo) -> None:
    api = api_client(demo)
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)

    def listing() -> tuple[list[str], list[str], list[str]]:
        pods = core.list_namespaced_pod("default", _request_timeout=10)
        replicasets = apps.list_namespaced_replica_set("default", _request_timeout=10)
        services = core.list_namespaced_service("default", _request_timeout=10)
        return names(pods.items), names(replicasets.items), names(services.items)

    async def ready() -> bool:
        pods, replicasets, _ = await asyncio.to_thread(listing)
        return len(pods) >= 1 and len(replicasets) == 1

    await wait_until(ready, 20, message="the first revision's pods listed through the client")
    _, replicasets, services = await asyncio.to_thread(listing)
    assert replicasets[0].startswith(NAME + "-") and {"rollout-bluegreen-active", "rollout-bluegreen-preview"} <= set(
        services
    )

    def get_rollout() -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "default", "rollouts", NAME, _request_timeout=10
        )
        assert isinstance(obj, dict)
        return obj

    rollout = await asyncio.to_thread(get_rollout)
    assert rollout["kind"] == "Rollout" and rollout["spec"]["strategy"]["blueGreen"]["activeService"]

    # A watch sees the change a merge patch makes (the client sends application/merge-patch+json).
    def patch_and_watch() -> list[str]:
        custom.patch_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "default", "rollouts", NAME, {"spec": {"paused": True}}, _request_timeout=10
        )
        seen = []
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            custom.list_namespaced_custom_object,
            "argoproj.io",
            "v1alpha1",
            "default",
            "rollouts",
            timeout_seconds=3,
            _request_timeout=10,
        )
        for event in stream:
            seen.append(f"{event['type']} paused={event['object']['spec'].get('paused')}")
            if event["object"]["spec"].get("paused"):
                break
        return seen

    seen = await asyncio.to_thread(patch_and_watch)
    assert any(line.endswith("paused=True") for line in seen), seen
    assert (await asyncio.to_thread(get_rollout))["spec"]["paused"] is True

    # A 404 comes back as the client's ApiException with the Kubernetes Status.
    def missing() -> int:
        try:
            custom.get_namespaced_custom_object("argoproj.io", "v1alpha1", "default", "rollouts", "nope")
        except client.ApiException as exc:
            return int(exc.status)
        return 200

    assert await asyncio.to_thread(missing) == 404
    api.close()  # type: ignore[no-untyped-call]
