"""The route words: which pools every worker serves, one 64-bit value per application in shared memory.

Under `--workers` the supervisor flips by storing one aligned 8-byte word in a memory page that
every worker maps read-only; each request compares the word with its worker's RouteTable and, on a
difference, the worker rebuilds the table from the pool slots it was sent. So a flip takes no
round trip through the workers (a message had to wait for a busy worker's GIL and CPU slice: p99
10+ ms under load): once the store is done, every worker routes its next request by it, which is
what the flip's answer promises. Pool changes still travel as acknowledged messages, and a word
names only pools the workers acknowledged (the supervisor orders the two).

The word's layout and the private word of a single process are the data plane's
(`proxy.dataplane.routes`); this module shares one between processes. The store and the loads are
single aligned 8-byte moves (memoryview 'Q' items), so no reader sees half a word.
"""

from __future__ import annotations

import mmap
import os
import tempfile

from proxy.dataplane.routes import MAX_APPS

SIZE = 8 * MAX_APPS  # one page: a word per application, indexed by the application's slot


def shared_word() -> tuple[int, memoryview]:
    """New shared words, all zero: (file descriptor to hand to workers, writable view)."""
    try:
        fd = os.memfd_create("bluegreen-routes", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # no memfd (not Linux): an unlinked temporary file maps the same
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, SIZE)
    return fd, memoryview(mmap.mmap(fd, SIZE)).cast("Q")


def attach_word(fd: int) -> memoryview:
    """A worker's read-only view of the supervisor's words."""
    view = memoryview(mmap.mmap(fd, SIZE, prot=mmap.PROT_READ)).cast("Q")
    os.close(fd)  # the mapping outlives the descriptor
    return view
