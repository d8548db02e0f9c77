"""Child processes on the running event loop: start, wait until they listen, stop, all without blocking it.

The test's own servers (upstreams, an embedded proxy) run on the same loop as the test, so a blocking
call there (`time.sleep`, `Popen.communicate`, a blocking connect) would stall them while a child starts
or stops. Everything here awaits instead: `asyncio.create_subprocess_exec`, output read by a task (a
full pipe never blocks the child), readiness polled with `asyncio.open_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from tests.support.waiting import wait_until

__all__ = ["REPO", "Process", "child_pids", "wait_for_port"]

REPO = Path(__file__).resolve().parents[2]


class Process:
    """A child process whose output (stdout and stderr together) is collected in the background."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._chunks: list[bytes] = []
        self._reader = asyncio.get_running_loop().create_task(self._read()) if proc.stdout is not None else None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
        output: bool = True,
    ) -> Process:
        """Start `argv` (`name` for error messages); with `output=False` its output goes nowhere."""
        sink = asyncio.subprocess.PIPE if output else asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT if output else asyncio.subprocess.DEVNULL,
        )
        return cls(proc, name or Path(argv[0]).name)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self._chunks.append(chunk)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def output(self) -> str:
        """What it printed so far."""
        return b"".join(self._chunks).decode(errors="replace")

    def send_signal(self, sig: int) -> None:
        # os.kill, not Popen.send_signal: that one polls first, which reaps an exited child behind the
        # event loop's back (the loop's child watcher then reports "unknown child process", status 255).
        # Until the loop has reaped it, the pid cannot be reused, so this reaches the right process.
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    async def wait_listening(self, *ports: int, within: float = 15.0) -> None:
        """Until every port accepts a connection; RuntimeError with its output if the process exits first."""
        for port in ports:
            await wait_for_port(port, within=within, process=self)

    async def stop(self, grace: float = 15.0, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """`sig` (SIGTERM), then SIGKILL after `grace` s; returns the exit status and the whole output."""
        self.send_signal(sig)
        try:
            async with asyncio.timeout(grace if sig != signal.SIGKILL else None):
                await self.proc.wait()
        except TimeoutError:
            self.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            await self._reader
        code = self.proc.returncode
        assert code is not None
        return code, self.output

    async def kill(self) -> None:
        """SIGKILL and reap (nothing to say about the exit status: it was killed)."""
        await self.stop(sig=signal.SIGKILL)


async def wait_for_port(port: int, *, within: float = 15.0, process: Process | None = None) -> None:
    """Until 127.0.0.1:`port` accepts a connection (polled with `asyncio.open_connection`)."""

    async def accepts() -> bool:
        if process is not None and process.returncode is not None:
            if process._reader is not None:
                await process._reader
            raise RuntimeError(f"{process.name} exited with {process.returncode}: {process.output[-3000:]}")
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    await wait_until(accepts, within, message=f"a listener on port {port}", ignore=(OSError,))


def child_pids(pid: int) -> set[int]:
    """The direct children of `pid` (read from /proc: no subprocess, nothing that blocks)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found
