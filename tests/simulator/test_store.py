"""The object store: resource versions, optimistic concurrency, generations, watch."""

from __future__ import annotations

import asyncio

import pytest

from simulator.k8s.clock import VirtualClock
from simulator.k8s.objects import ObjectMeta, Service
from simulator.k8s.store import AlreadyExistsError, ConflictError, EventType, NotFoundError, Store
from tests.support import wait_until


def svc(name: str) -> Service:
    return Service(metadata=ObjectMeta(name=name), spec={"selector": {"app": name}})


async def test_versions_conflicts_and_watch() -> None:
    clock = VirtualClock()
    store = Store(clock.now)
    events = []

    async def watch() -> None:
        async for event in store.watch("Service"):
            events.append((event.type, event.object.name, event.resource_version))
            if event.type == EventType.DELETED:
                return

    watcher = asyncio.create_task(watch())
    await wait_until(lambda: store._watchers, message="the watch subscribed")  # it sees changes from now on
    created = store.create(svc("a"))
    assert created.metadata.resource_version == 1 and created.metadata.generation == 1
    with pytest.raises(AlreadyExistsError):
        store.create(svc("a"))
    stale = store.get(Service, "a")
    created.spec["selector"] = {"app": "b"}
    updated = store.update(created, spec_changed=True)
    assert (updated.metadata.resource_version, updated.metadata.generation) == (2, 2)
    with pytest.raises(ConflictError, match="stale"):
        store.update(stale)
    store.get(Service, "a").spec["selector"] = {"mutated": "copy"}  # reads are copies
    assert store.get(Service, "a").selector == {"app": "b"}
    store.delete(Service, "a")
    with pytest.raises(NotFoundError):
        store.get(Service, "a")
    await asyncio.wait_for(watcher, 1)
    assert events == [(EventType.ADDED, "a", 1), (EventType.MODIFIED, "a", 2), (EventType.DELETED, "a", 3)]


def test_list_orders_by_creation() -> None:
    clock = VirtualClock()
    store = Store(clock.now)
    for name in ("c", "a", "b"):
        store.create(svc(name))
    assert [s.name for s in store.list(Service)] == ["c", "a", "b"]
    assert [s.metadata.uid for s in store.list(Service)] == ["service-000001", "service-000002", "service-000003"]
