"""A worker's heap keeps what bodies pass through (`proxy.workers.heap`): the settings, and what they change in
a real process (glibc's malloc, page faults counted by the kernel)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from proxy.workers.heap import HEAP_MAX, KEEP, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, heap_settings

GLIBC = "glibc 2.36"
glibc_only = pytest.mark.skipif(
    not (os.confstr_names.get("CS_GNU_LIBC_VERSION") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")),
    reason="glibc's malloc is what is tuned; other C libraries are left alone (heap_settings)",
)


def test_settings_on_glibc() -> None:
    assert heap_settings({}, GLIBC) == {M_MMAP_THRESHOLD: HEAP_MAX, M_TRIM_THRESHOLD: KEEP}
    assert heap_settings({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, GLIBC) != {}


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"MALLOC_TOP_PAD_": "0"},
        {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=131072"},
    ],
    ids=["trim", "mmap", "top-pad", "tunables"],
)
def test_an_operators_malloc_settings_win(environ: dict[str, str]) -> None:
    assert heap_settings(environ, GLIBC) == {}


def test_nothing_off_glibc() -> None:
    assert heap_settings({}, "") == {}
    assert heap_settings({}, "musl 1.2.4") == {}


# Cycles of what a loaded worker does with 64 KiB bodies: 64 in flight, then all freed. The faults of the
# cycles after the first are the pages the heap gave back to the kernel and took again.
CYCLES = textwrap.dedent(
    """
    import resource, sys
    from proxy.workers.heap import keep_heap
    settings = keep_heap() if sys.argv[1] == "keep" else {}
    def cycle():
        bodies = [bytes(65536) for _ in range(64)]
        del bodies
    cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        cycle()
    print(len(settings), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _cycles(mode: str, env: dict[str, str] | None = None) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True, timeout=60, env=env
    ).stdout.split()
    return int(out[0]), int(out[1])


@glibc_only
def test_a_kept_heap_takes_no_page_again() -> None:
    settings, kept_faults = _cycles("keep")
    assert settings == 2
    _, default_faults = _cycles("default")
    # 20 cycles of 4 MiB (1,024 pages): glibc's defaults give most pages back and fault them in again each
    # cycle (14k faults measured); kept, fewer than one cycle's pages are ever faulted again (270 measured).
    assert default_faults > 10 * 1024, default_faults
    assert kept_faults < 1024, kept_faults


@glibc_only
def test_an_operators_setting_leaves_malloc_as_it_is() -> None:
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="131072")
    settings, faults = _cycles("keep", env)
    assert settings == 0
    assert faults > 10 * 1024, faults
