"""The supervisor <-> worker control channel: newline-delimited JSON over a socketpair."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any


class Channel:
    """Request/response in order; one call at a time (the lock), so replies need no ids."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
        return cls(reader, writer)

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        line = await self.reader.readline()
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            await self.send(message)
            reply = await self.receive()
        if reply is None:
            raise ConnectionError("worker channel closed")
        return reply

    def close(self) -> None:
        self.writer.close()
