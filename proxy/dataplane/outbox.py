"""Writes are held until the event loop has handled every ready event, then sent: one write per
connection per loop iteration (HAProxy likewise sends after processing its events).

uvloop's `transport.write` sends at once, so under load each request woke its peer (the upstream,
then the client) separately, and on a VM every wake-up of a sleeping process on the other core is
an inter-processor interrupt. The proxy's kernel time, mostly spent waking peers, was half its CPU.
Sending at the end of the iteration lets one wake-up find several requests waiting: measured with
`wrk -c64` on the 2-core machine, 14k -> 22k requests/s and 70 -> 45 µs of CPU per request.

Holding costs a loop turn (~10 µs here), which buys nothing when a connection is alone in its
iteration (one client): then the next writes go out at once, and holding is tried again after them.
Every close must send what is held first; an abort drops it.

Pieces are joined into one write while they are small; past `JOIN_LIMIT` they go to the transport as
they are (`writelines`: uvloop sends them with one writev), as copying a 64 KiB body into a joined
buffer costs more than the writev's bookkeeping.
"""

from __future__ import annotations

import asyncio
from typing import Final

DIRECT_RUN: Final = 32  # writes sent at once after an iteration that held one connection alone
JOIN_LIMIT: Final = 8192  # bytes: smaller pieces are joined (one buffer, one write); larger ones go as they are


class Outbox:
    """The connections with bytes held in this loop iteration; sent by one callback at its end."""

    __slots__ = ("direct", "held", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.held: list[Sender] = []
        self.direct = 0  # writes to send at once before holding is tried again (0 while anything is held)

    def hold(self, conn: Sender) -> None:
        """`conn` has bytes to send (called on its first write of the iteration)."""
        if not self.held:
            # call_soon runs after the I/O callbacks of this iteration: the whole batch is handled first.
            self.loop.call_soon(self.send)
        self.held.append(conn)

    def send(self) -> None:
        held = self.held
        self.held = []
        for conn in held:
            conn.send_held()
        if len(held) == 1:
            self.direct = DIRECT_RUN  # alone in its iteration: holding bought nothing but latency


class Sender:
    """The writing side of a connection protocol (client or upstream): bytes held per iteration."""

    __slots__ = ()
    held: list[bytes]  # written in this loop iteration, not sent yet
    outbox: Outbox
    transport: asyncio.Transport | None
    closed: bool

    def write(self, data: bytes) -> None:
        """Send `data` once this loop iteration's events are handled, or now when the loop is not busy."""
        held = self.held
        if not held and self._now():
            if not self.closed and self.transport is not None:
                self.transport.write(data)
            return
        held.append(data)

    def write_parts(self, parts: list[bytes]) -> None:
        """`write` the pieces of `parts`, in their order, as one write (`_send`)."""
        held = self.held
        if not held and self._now():
            self._send(parts)
            return
        held.extend(parts)

    def _now(self) -> bool:
        """On the connection's first write of the iteration: whether it goes out at once (the loop is not
        busy); otherwise the connection is held until the iteration's end."""
        outbox = self.outbox
        if outbox.direct:
            outbox.direct -= 1
            return True
        outbox.hold(self)
        return False

    def _send(self, parts: list[bytes]) -> None:
        """One write of `parts`: joined while small, else as they are (one writev, nothing copied again)."""
        if self.closed or self.transport is None:
            return
        if len(parts) == 1:
            self.transport.write(parts[0])
            return
        size = 0
        for part in parts:
            size += len(part)
        if size < JOIN_LIMIT:
            self.transport.write(b"".join(parts))
        else:
            self.transport.writelines(parts)

    def send_held(self) -> None:
        held = self.held
        if held:
            self._send(held)
            held.clear()
