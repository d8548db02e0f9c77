"""Server-sent events: one writer for the simulator's streams (the API's and the dashboard's)."""

from __future__ import annotations

import asyncio

from aiohttp import web

# Queued (event name, JSON data) pairs; None ends the stream (shutdown).
EventQueue = asyncio.Queue[tuple[str, str] | None]
HEARTBEAT = 15.0
HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def pump(
    response: web.StreamResponse, queue: EventQueue, first: bytes = b": connected\n\n", heartbeat: float = HEARTBEAT
) -> None:
    """Write `first`, then queued events until the queue ends or the client goes; a comment on quiet
    lines finds clients that went away."""
    try:
        await response.write(first)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if item is None:
                return
            kind, data = item
            await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
    except ConnectionResetError:
        pass  # the client went away
