"""How a worker's C heap keeps the memory that bodies pass through.

Every read a worker makes becomes a bytes object (up to uvloop's 256 KiB read buffer) that is freed once
written on. glibc returns the heap's free top to the kernel whenever it passes 128 KiB (`M_TRIM_THRESHOLD`),
and the next burst of reads faults those pages back in, zero-filled. Which heap layout a worker ends up
with decides whether that happens: after a minute of small POSTs, the same 64 KiB upload load (wrk -c64)
took 15 page faults per request, one per 4 KiB of body, and 170 µs of CPU per request instead of 100
(docs/benchmarks.md, "The heap of a worker"). HAProxy and nginx keep their buffers in pools for the same
reason.

So a worker keeps up to `KEEP` bytes of free heap before trimming (more than 512 connections' worth of
64 KiB bodies in flight) and serves allocations of up to `HEAP_MAX` from the heap rather than from a
mapping of their own: a trim threshold turns off glibc's sliding mmap threshold, which would otherwise
have moved up to the read size by itself. An operator's own settings (`MALLOC_*_` or `GLIBC_TUNABLES`)
win: nothing is set then.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Final

M_TRIM_THRESHOLD: Final = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD: Final = -3
KEEP: Final = 32 << 20
HEAP_MAX: Final = 1 << 20  # above uvloop's read buffer (256 KiB); larger allocations are mapped and unmapped
OPERATOR_SETTINGS: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def heap_settings(environ: Mapping[str, str], libc: str) -> dict[int, int]:
    """The mallopt settings to make: none off glibc (`libc` as confstr gives it: "glibc 2.36") or where the
    operator tuned malloc through the environment."""
    if not libc.startswith("glibc "):
        return {}
    if any(name in environ for name in OPERATOR_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return {}
    return {M_MMAP_THRESHOLD: HEAP_MAX, M_TRIM_THRESHOLD: KEEP}


def keep_heap() -> dict[int, int]:
    """Apply `heap_settings` to this process; what was set (best effort: what glibc refused is left out)."""
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # no such name here: not glibc
        return {}
    settings = heap_settings(os.environ, libc)
    if not settings:
        return {}
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return {param: value for param, value in settings.items() if mallopt(param, value) == 1}
