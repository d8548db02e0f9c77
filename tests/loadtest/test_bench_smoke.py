"""The benchmark command still runs end to end against every target (a smoke run: no timing assertions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import CASES, FLIP_TARGETS, TARGETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_smoke_reports_every_target(tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = [sys.executable, "-m", "loadtest.bench", "--smoke", "--json", str(out), "--markdown", str(md)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:  # timed out, or the test was interrupted
            proc.terminate()  # SIGTERM: the bench stops the servers it started, then exits
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]

    result = json.loads(out.read_text())
    for case in CASES:
        for target in TARGETS:
            row = result["cases"][case][target]
            for key in ("rps", "cpu_us_per_req", "p50_us", "p99_us"):
                assert row[key] is not None and row[key] > 0, (case, target, key, row)
    for target in FLIP_TARGETS:
        flips = result["flips"][target]
        assert flips["count"] > 0 and flips["p50_ms"] > 0 and flips["p99_ms"] > 0, (target, flips)

    # The printed tables: one row per target under each case, and the flip table.
    for target in TARGETS:
        rows = re.findall(rf"^{re.escape(target)}\s+\d", stdout, re.MULTILINE)
        assert len(rows) == len(CASES) + (target in FLIP_TARGETS), (target, stdout)
    assert md.read_text().count("| ours-2w |") == len(CASES) + 1
