"""A fleet of proxies sharing one live color through etcd.

Keys under the configured prefix:

- `state`: the desired state (`DesiredState.to_json`: pools' endpoints, each application's Host names
  and routes with their generation, and the state's version), one JSON value. A change of any
  application is one compare-and-swap transaction on its mod_revision, which also reads the member set
  at that revision (two applications flipped at once from two proxies: one of them retries).
- `proxies/<id>`: each proxy's acknowledgement `{"version": N}`, written under its own lease.
  A proxy is live while its lease is; a frozen or cut-off one drops out when the lease expires.

Every proxy (its supervisor) reads the prefix at start, watches it from the next revision (and
re-reads after a compaction or any stream error, so no change is missed), applies each state to
its workers and then acknowledges. A flip answers once every member read in the transaction has
acknowledged the generation or dropped out, or after `ack_timeout` with the laggards named.

Fencing: a proxy whose lease was not renewed in time (measured from when the last successful
renewal was *sent*, so never later than etcd's own expiry) stops serving routes it can no longer
vouch for: its workers answer 503 until it holds a lease again and has applied the latest state.
With `on_partition: serve` it keeps serving the last routes instead (availability over safety).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.config import Config
from proxy.control.api import AckTimeoutError, ConflictError, Routes, UnavailableError
from proxy.controlplane.events import emit
from proxy.controlplane.state import DesiredState
from proxy.controlplane.switch import Switch
from proxy.dataplane.pool import PoolSpec
from proxy.fleet.etcd import CompactedError, EtcdClient, Event, KeyValue, StoreUnavailableError

log = logging.getLogger("bluegreen.fleet")
FENCE_MARGIN = 0.9  # fence a little before etcd can expire the lease, whatever the clock skew between them


class Fleet:
    def __init__(
        self,
        config: Config,
        switch: Switch,
        set_fence: Callable[[float], Awaitable[None]],
        admin_url: str,
        *,
        membership: dict[str, Any] | None = None,
    ) -> None:
        sc = config.state
        self.config = config
        self.local = switch  # this proxy's Switch: its lock, checks, and the state it serves (`adopt`)
        self._set_fence = set_fence
        self.client = EtcdClient(sc.endpoints)
        self.ttl = int(sc.lease_ttl)
        self.fence = sc.on_partition == "fence"
        self.ack_timeout = sc.ack_timeout or 2 * sc.lease_ttl
        self.id = sc.name or f"{socket.gethostname()}-{os.getpid()}"
        # A hot upgrade takes its predecessor's place in the fleet: the same member id and, while alive, lease.
        self._inherited_lease = 0
        if membership is not None:
            self.id = str(membership["id"])
            self._inherited_lease = int(membership["lease"])
        self.detached = False  # handed over to a successor: follow the state (draining), acknowledge nothing
        self.admin_url = admin_url
        self.state_key = sc.prefix + "state"
        self.members_prefix = sc.prefix + "proxies/"
        self.lease = 0
        self.valid_until = 0.0
        self.state_rev = 0  # mod_revision of the state this proxy applied
        self.members: dict[str, dict[str, Any]] = {}  # live proxies' acknowledgements (from the watch)
        self.store_up = False
        self._changed = asyncio.Condition()
        self._write = asyncio.Lock()  # one change at a time from this proxy
        self._tasks: list[asyncio.Task[None]] = []
        self.last_report: dict[str, Any] | None = None  # the last change: who acknowledged, who dropped out

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the fleet: lease, state (initialised from this config if the fleet has none), ack, watch."""
        sent = time.monotonic()
        if self._inherited_lease and await self.client.keepalive(self._inherited_lease):
            self.lease = self._inherited_lease
        else:
            self.lease = await self.client.grant(self.ttl)
        self.valid_until = sent + self.ttl * FENCE_MARGIN
        rev, kvs = await self.client.get(self.state_key)
        if not kvs:
            await self.client.compare_and_put(self.state_key, self.local.state.encode(), mod_revision=0)
        rev = await self._resync()
        self.store_up = True
        self._tasks = [
            asyncio.get_running_loop().create_task(self._watch(rev + 1)),
            asyncio.get_running_loop().create_task(self._keepalive()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if not self.detached:
            with contextlib.suppress(StoreUnavailableError):
                await self.client.revoke(self.lease)  # leave at once rather than after the TTL
        await self.client.close()

    def membership(self) -> dict[str, Any]:
        """What a successor needs to take this proxy's place in the fleet (hot upgrade)."""
        return {"id": self.id, "lease": self.lease}

    def detach(self) -> None:
        """A successor took this proxy's place: its lease and member key are the successor's now (kept alive by
        both until this one exits, never revoked by it); this one still applies states to its draining workers."""
        self.detached = True

    def fence_until(self) -> float:
        return self.valid_until if self.fence else 0.0

    # -- applying the shared state ---------------------------------------------------------

    @staticmethod
    def _encode(state: dict[str, Any]) -> bytes:
        return json.dumps(state, separators=(",", ":"), sort_keys=True).encode()

    async def _resync(self) -> int:
        """Read the whole prefix, apply the state, reset the member set; returns the read revision."""
        rev, kvs = await self.client.get(self.config.state.prefix, prefix=True)
        members: dict[str, dict[str, Any]] = {}
        for kv in kvs:
            if kv.key == self.state_key:
                await self._apply(kv)
            elif kv.key.startswith(self.members_prefix):
                members[kv.key[len(self.members_prefix) :]] = json.loads(kv.value)
        async with self._changed:
            for member in sorted(members.keys() - self.members.keys()):
                self._membership("joined", member, members[member])
            for member in sorted(self.members.keys() - members.keys()):
                self._membership("dropped", member, self.members[member])
            self.members = members
            self._changed.notify_all()
        return rev

    def _membership(self, change: str, member: str, info: dict[str, Any]) -> None:
        """A proxy joined the fleet or dropped out of it (its lease expired, or it left)."""
        if member == self.id:
            return
        level = logging.INFO if change == "joined" else logging.WARNING
        emit(
            log,
            level,
            f"fleet_member_{change}",
            f"fleet: proxy {member} {change}",
            member=member,
            admin=info.get("admin"),
            pid=info.get("pid"),
        )

    async def _apply(self, kv: KeyValue) -> None:
        if kv.mod_revision <= self.state_rev and self.state_rev:
            return
        state = DesiredState.from_json(json.loads(kv.value))
        async with self.local.lock:
            await self.local.adopt(state)  # every worker serves it before this proxy acknowledges
            self.state_rev = kv.mod_revision
        await self._ack()

    async def _ack(self) -> None:
        if self.detached:
            return
        state = self.local.state
        value = {"version": state.version, "admin": self.admin_url, "pid": os.getpid()}
        await self.client.put(self.members_prefix + self.id, self._encode(value), lease=self.lease)

    async def _on_events(self, events: list[Event]) -> None:
        for event in events:
            key = event.kv.key
            if key == self.state_key and event.kind == "PUT":
                await self._apply(event.kv)
            elif key.startswith(self.members_prefix):
                member = key[len(self.members_prefix) :]
                async with self._changed:
                    if event.kind == "DELETE":
                        gone = self.members.pop(member, None)  # its lease expired or it left
                        if gone is not None:
                            self._membership("dropped", member, gone)
                    else:
                        info = json.loads(event.kv.value)
                        if member not in self.members:
                            self._membership("joined", member, info)
                        self.members[member] = info
                    self._changed.notify_all()

    async def _watch(self, start: int) -> None:
        while True:
            try:
                async for events in self.client.watch(self.config.state.prefix, start, prefix=True):
                    await self._on_events(events)
                    start = max(e.kv.mod_revision for e in events) + 1
            except CompactedError:
                pass
            except StoreUnavailableError as exc:
                log.warning("etcd watch broke (%s); re-reading", exc)
            # Re-read everything, then watch from the next revision: nothing is missed either way.
            while True:
                try:
                    start = await self._resync() + 1
                    break
                except StoreUnavailableError:
                    await asyncio.sleep(0.2)

    async def _keepalive(self) -> None:
        interval = self.ttl / 4
        while True:
            await asyncio.sleep(interval if self.store_up else 0.2)
            sent = time.monotonic()
            try:
                alive = await self.client.keepalive(self.lease)
                if not alive:
                    # Expired while we were cut off or frozen: rejoin with a new lease, on the latest state.
                    self.lease = await self.client.grant(self.ttl)
                    await self._resync()
                self.valid_until = sent + self.ttl * FENCE_MARGIN
                self.store_up = True
                if self.fence:
                    await self._set_fence(self.valid_until)
            except StoreUnavailableError:
                self.store_up = False  # keep serving the last routes; flips are refused meanwhile

    # -- changes (admin calls on this proxy) ----------------------------------------------------

    async def change(self, edit: Callable[[DesiredState], DesiredState | None]) -> dict[str, Any]:
        """Apply `edit` to the shared state with compare-and-swap; wait for every live proxy to serve it.

        Every change of the shared state moves its version: proxies acknowledge by version."""
        async with self._write:
            if not self.store_up:
                raise UnavailableError("the state store (etcd) is unreachable: nothing was changed")
            current = self.local.state
            edited = edit(current)
            if edited is None:
                return {"changed": False}
            new = edited.with_version(current.version + 1)
            try:
                ok, rev, members = await self.client.compare_and_put(
                    self.state_key, new.encode(), mod_revision=self.state_rev, also_read_prefix=self.members_prefix
                )
            except StoreUnavailableError as exc:
                raise UnavailableError(f"the state store (etcd) failed: {exc}") from None
            if not ok:
                raise ConflictError("the fleet's state changed meanwhile (another admin call); retry")
            return await self._await_acks(new.version, [kv.key[len(self.members_prefix) :] for kv in members])

    async def _await_acks(self, version: int, members: list[str]) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + self.ack_timeout

        def pending() -> list[str]:
            # A member from before applications acknowledges `generation` (the version of its states too).
            return [
                m
                for m in members
                if m in self.members and self.members[m].get("version", self.members[m].get("generation", 0)) < version
            ]

        async with self._changed:
            while pending():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise AckTimeoutError(
                        f"state version {version} is committed but not yet served by: {', '.join(pending())}"
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
            acked = [m for m in members if m in self.members]
            dropped = [m for m in members if m not in self.members]
        return {"changed": True, "acked": sorted(acked), "dropped": sorted(dropped)}

    async def switch(
        self, app: str, active: str, preview: str | None, *, force: bool, generation: int | None
    ) -> Routes:
        started = time.monotonic()
        before = self.local.routes(app)
        plan = await self.local.plan(app, active, preview, force=force, generation=generation)
        if plan is None:
            return self.local.routes(app)
        new_active, new_preview = plan

        def edit(state: DesiredState) -> DesiredState | None:
            routes = state.app(app)
            if routes.active == new_active and routes.preview == new_preview:
                return None
            return state.with_routes(app, new_active, new_preview)

        self.last_report = await self.change(edit)
        self.local.record_flip(time.monotonic() - started)
        seconds = time.monotonic() - started
        self.local.log_flip(app, before, self.local.routes(app), seconds, force=force, fleet=self.last_report)
        return self.local.routes(app)

    async def set_endpoints(
        self, pool: str, endpoints: list[str], labels: tuple[tuple[str, str], ...] | None = None
    ) -> None:
        """Create or replace the pool with key `pool` (`proxy.config.pool_key`)."""

        def edit(state: DesiredState) -> DesiredState | None:
            spec = state.pools.get(pool)
            kept = spec.labels if spec else ()
            new = PoolSpec(tuple(endpoints), spec.balancer if spec else None, kept if labels is None else labels)
            return None if new == spec else state.with_pool(pool, new)

        self.last_report = await self.change(edit)

    async def delete_pool(self, app: str, pool: str) -> None:
        key = self.local.deletable(pool, app).name
        self.last_report = await self.change(lambda state: state.without_pool(key))

    def status(self) -> dict[str, Any]:
        return {
            "self": self.id,
            "store": "up" if self.store_up else "down",
            "lease": self.lease,
            "fence": "fence" if self.fence else "serve",
            "fenced": bool(self.fence and time.monotonic() > self.valid_until),
            "members": [{"id": member, **info} for member, info in sorted(self.members.items())],
        }
