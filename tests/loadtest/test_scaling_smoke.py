"""The scaling driver still runs end to end, every section (a smoke run: no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.scaling import CONNECTION_TARGETS, SECTIONS, markers

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.mode_independent  # the scaling harness, in the installed mode: run once (scripts/test)
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scaling_smoke_reports_positive_numbers(tmp_path: Path) -> None:
    out, md = tmp_path / "scaling.json", tmp_path / "scaling.md"
    md.write_text("# Benchmarks\n\nprose that must stay\n")
    argv = [sys.executable, "-m", "loadtest.scaling", "--smoke", "--json", str(out), "--markdown", str(md)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:  # timed out, or the test was interrupted
            proc.terminate()  # SIGTERM: the driver stops the processes it started, then exits
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads(out.read_text())

    idle = result["idle"]["rows"]
    assert idle and all(r["after_mib"] > 0 and r["before_mib"] > 0 for r in idle.values()), idle

    shapes = result["shapes"]
    assert {n.split("=")[0] for n in shapes} == {"endpoints", "pools"}, shapes
    for name, row in shapes.items():
        assert row["rps"] > 0 and row["cpu_us_per_req"] > 0, (name, row)
        if row["pools"] > 1:  # one pool has nothing to flip to
            assert row["flips"] > 0 and row["failed_flips"] == 0 and row["flip_p50_ms"] > 0, (name, row)
        else:
            assert row["flips"] == 0, (name, row)

    for concurrency, by_target in result["connections"].items():
        assert set(by_target) == set(CONNECTION_TARGETS), concurrency
        for target, row in by_target.items():
            assert row["rps"] > 0 and row["p99_us"] > 0, (concurrency, target, row)

    for placement in ("shared", "pinned"):
        for target in ("haproxy", "ours", "ours-2w"):
            row = result["workers"][placement][target]
            assert row["rps"] > 0 and row["cpu_us_per_req"] > 0, (placement, target, row)

    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nprose that must stay\n")
    for section in SECTIONS:
        begin, end = markers(section)
        assert text.count(begin) == 1 and text.count(end) == 1, section
    assert "| ours-2w |" in text and "Memory per idle keep-alive connection" in stdout
