"""Real Locust (its own processes), a real proxy and real upstreams: flips every 200 ms under load cost nothing.

No timing assertions: only that nothing failed, nothing was stale after an acknowledged flip, flips happened,
both colors answered, and Locust's own count agrees with the records the master judged.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_loadtest(results: Path, *args: str, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "loadtest.cli", "--results", str(results), "--quiet", *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # timed out or interrupted: SIGTERM makes it stop the proxy and Locust it started
            proc.terminate()
            proc.communicate(timeout=30)
    log = (results / "locust.log").read_text()[-3000:] if (results / "locust.log").exists() else ""
    assert proc.returncode == 0, f"{stdout[-2000:]}\n{stderr[-2000:]}\n{log}"
    summary: dict[str, Any] = json.loads((results / "summary.json").read_text())
    return summary


def check(summary: dict[str, Any], results: Path) -> None:
    assert summary["failures"] == 0 and summary["locust"]["failures"] == 0
    assert summary["counters"] == {"connection_errors": 0, "http_errors": {}, "mismatched": 0, "dropped": 0}
    assert summary["stale"] == 0, summary["stale_examples"]
    assert summary["flips"]["count"] >= 5 and summary["flips"]["errors"] == 0
    assert summary["colors_seen"] == ["blue", "green"]
    assert set(summary["requests_by_color"]["active"]) == {"blue", "green"}
    assert summary["requests"] > 100
    # Every success Locust counted was judged by the master: no record lost on the way.
    with (results / "locust_stats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    counted = sum(int(r["Request Count"]) for r in rows if r["Type"] == "GET")
    assert counted == summary["requests"]
    assert any(r["Type"] == "FLIP" and r["Name"].startswith("POST /api/v1/switch") for r in rows)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_flips_every_200ms_under_locust_load(tmp_path: Path) -> None:
    results = tmp_path / "local"
    summary = run_loadtest(results, "--users", "4", "--duration", "10s", "--switch-every", "0.2s", timeout=120)
    check(summary, results)
    assert summary["requests_by_color"]["preview"]  # the preview listener was exercised too


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.mode_independent  # Locust's distribution: the proxy's part is the test above's
def test_distributed_run_reports_to_the_master(tmp_path: Path) -> None:
    results = tmp_path / "distributed"
    args = ("--users", "4", "--duration", "6s", "--switch-every", "0.2s", "--workers", "1")
    summary = run_loadtest(results, *args, timeout=120)
    check(summary, results)
    assert summary["config"]["workers"] == 1


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", ["slow-pool", "replace-endpoints"])
def test_scenarios_flip_without_failures_or_stale_answers(tmp_path: Path, scenario: str) -> None:
    results = tmp_path / scenario
    args = ("--users", "6", "--duration", "5s", "--switch-every", "0.25s", "--scenario", scenario)
    summary = run_loadtest(results, *args, timeout=120)
    check(summary, results)
    assert summary["config"]["scenario"] == scenario


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.mode_independent  # the harness's paths
def test_relative_results_path_is_the_callers(tmp_path: Path) -> None:
    """Locust runs with the project root as its working directory; `--results out` still means ./out here."""
    argv = [sys.executable, "-m", "bluegreen", "loadtest", "--results", "out", "--quiet"]
    argv += ["--users", "2", "--duration", "3s", "--switch-every", "0.5s"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["failures"] == 0
    assert (tmp_path / "out" / "locust_stats.csv").exists() and (tmp_path / "out" / "proxy.yaml").exists()
    assert not (ROOT / "out").exists()
