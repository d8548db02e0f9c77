"""The object store: the simulator's API server.

Objects are keyed by (kind, namespace, name). Every write bumps one global resource version, like
etcd's revision, and is published to watchers as ADDED / MODIFIED / DELETED. Reads hand out copies,
so a controller can never change stored state except through `update`, and an `update` carrying a
stale resource version is refused (optimistic concurrency, as in Kubernetes).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from simulator.k8s.objects import Resource

__all__ = ["AlreadyExistsError", "ConflictError", "EventType", "NotFoundError", "Store", "StoreError", "WatchEvent"]

R = TypeVar("R", bound=Resource)


class StoreError(Exception):
    pass


class NotFoundError(StoreError):
    pass


class AlreadyExistsError(StoreError):
    pass


class ConflictError(StoreError):
    pass


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    object: Resource
    resource_version: int


class Store:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._objects: dict[tuple[str, str, str], Resource] = {}
        self._version = 0
        self._uids = itertools.count(1)
        self._watchers: list[asyncio.Queue[WatchEvent]] = []
        self._listeners: list[Callable[[WatchEvent], None]] = []

    @property
    def resource_version(self) -> int:
        return self._version

    def get(self, cls: type[R], name: str, namespace: str = "default") -> R:
        obj = self._objects.get((cls.kind, namespace, name))
        if obj is None:
            raise NotFoundError(f'{cls.kind} "{name}" not found in namespace "{namespace}"')
        assert isinstance(obj, cls)
        return obj.clone()

    def find(self, cls: type[R], name: str, namespace: str = "default") -> R | None:
        try:
            return self.get(cls, name, namespace)
        except NotFoundError:
            return None

    def list(self, cls: type[R], namespace: str | None = None) -> list[R]:
        found = [
            o.clone()
            for (kind, ns, _), o in self._objects.items()
            if isinstance(o, cls) and kind == cls.kind and (namespace is None or ns == namespace)
        ]
        return sorted(found, key=lambda o: (o.metadata.creation, o.metadata.sequence))

    def create(self, obj: R) -> R:
        if obj.key in self._objects:
            raise AlreadyExistsError(f'{obj.kind} "{obj.name}" already exists')
        stored = obj.clone()
        sequence = next(self._uids)
        stored.metadata.uid = f"{obj.kind.lower()}-{sequence:06d}"
        stored.metadata.sequence = sequence
        stored.metadata.creation = self._now()
        stored.metadata.generation = 1
        return self._write(stored, EventType.ADDED)

    def update(self, obj: R, *, spec_changed: bool = False) -> R:
        """Replace the stored object; `spec_changed` bumps `metadata.generation` as the API server does."""
        current = self._objects.get(obj.key)
        if current is None:
            raise NotFoundError(f'{obj.kind} "{obj.name}" not found')
        if obj.metadata.resource_version != current.metadata.resource_version:
            raise ConflictError(
                f'{obj.kind} "{obj.name}": resource version {obj.metadata.resource_version} '
                f"is stale (now {current.metadata.resource_version})"
            )
        stored = obj.clone()
        if spec_changed:
            stored.metadata.generation = current.metadata.generation + 1
        return self._write(stored, EventType.MODIFIED)

    def delete(self, cls: type[Resource], name: str, namespace: str = "default") -> None:
        obj = self._objects.pop((cls.kind, namespace, name), None)
        if obj is None:
            raise NotFoundError(f'{cls.kind} "{name}" not found')
        self._version += 1
        self._publish(WatchEvent(EventType.DELETED, obj.clone(), self._version))

    def _write(self, stored: R, kind: EventType) -> R:
        self._version += 1
        stored.metadata.resource_version = self._version
        self._objects[stored.key] = stored
        self._publish(WatchEvent(kind, stored.clone(), self._version))
        return stored.clone()

    def _publish(self, event: WatchEvent) -> None:
        for queue in self._watchers:
            queue.put_nowait(event)
        for listener in self._listeners:
            listener(event)

    def subscribe(self, listener: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """A synchronous listener for every change (the scheduler wakes on it); returns its unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def watch(self, kind: str | None = None) -> AsyncIterator[WatchEvent]:
        """Every change from now on (optionally of one kind), in resource-version order."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while True:
                event = await queue.get()
                if kind is None or event.object.kind == kind:
                    yield event
        finally:
            self._watchers.remove(queue)
