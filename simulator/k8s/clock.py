"""Time for the simulator: loop time in demos, virtual time in tests.

Every time is a float of epoch seconds so that Argo's RFC 3339 timestamps (`scale-down-deadline`,
`pauseConditions[].startTime`) convert both ways. `LoopClock` follows the event loop's monotonic
clock (offset once to the wall clock), so a demo shares one consistent time with the proxy.
`VirtualClock` only moves when a test (or the cluster's scheduler) advances it, so a
`scaleDownDelaySeconds: 86400` costs nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "LoopClock", "VirtualClock", "format_time", "parse_time"]

# A fixed, recognisable start for virtual time: 2026-01-01T00:00:00Z.
VIRTUAL_EPOCH = 1_767_225_600.0


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...

    @property
    def virtual(self) -> bool:
        """True when time only moves on `advance`; the cluster then never sleeps for real."""
        ...


class LoopClock:
    """Real time taken from the running loop (monotonic), shifted to epoch seconds once."""

    virtual = False

    def __init__(self) -> None:
        self._offset = time.time() - asyncio.get_running_loop().time()

    def now(self) -> float:
        return asyncio.get_running_loop().time() + self._offset


class VirtualClock:
    """Time that stands still until advanced; never goes backwards."""

    virtual = True

    def __init__(self, start: float = VIRTUAL_EPOCH) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def set(self, when: float) -> None:
        if when > self._now:
            self._now = when


def format_time(t: float) -> str:
    """RFC 3339 UTC with a Z suffix and whole seconds, as Kubernetes writes timestamps."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
