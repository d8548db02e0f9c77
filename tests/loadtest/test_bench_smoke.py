"""The benchmark command still runs end to end against every target (smoke runs: no timing assertions)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import DEFAULT_CASES, DEFAULT_TARGETS, FLIP_TARGETS, TLS_CASES

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> tuple[str, str]:
    """`python -m loadtest.bench --smoke ARGS`: its stdout and stderr, after checking it succeeded."""
    argv = [sys.executable, "-m", "loadtest.bench", "--smoke", *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=200)
    finally:
        if proc.poll() is None:  # timed out, or the test was interrupted
            proc.terminate()  # SIGTERM: the bench stops the servers it started, then exits
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout, stderr


@pytest.mark.mode_independent  # the bench harness, in the installed mode: run once (scripts/test)
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_smoke_reports_every_target(tmp_path: Path) -> None:
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    stdout, _ = run_bench("--json", str(out), "--markdown", str(md))

    result = json.loads(out.read_text())
    assert set(result["cases"]) == set(DEFAULT_CASES)  # the TLS cases and ours-log only on request
    for case in DEFAULT_CASES:
        assert set(result["cases"][case]) == set(DEFAULT_TARGETS)
        for target in DEFAULT_TARGETS:
            row = result["cases"][case][target]
            for key in ("rps", "cpu_us_per_req", "p50_us", "p99_us"):
                assert row[key] is not None and row[key] > 0, (case, target, key, row)
    for target in FLIP_TARGETS:
        flips = result["flips"][target]
        assert flips["count"] > 0 and flips["p50_ms"] > 0 and flips["p99_ms"] > 0, (target, flips)

    # The printed tables: one row per target under each case, and the flip table.
    for target in DEFAULT_TARGETS:
        rows = re.findall(rf"^{re.escape(target)}\s+\d", stdout, re.MULTILINE)
        assert len(rows) == len(DEFAULT_CASES) + (target in FLIP_TARGETS), (target, stdout)
    assert md.read_text().count("| ours-2w |") == len(DEFAULT_CASES) + 1


@pytest.mark.mode_independent  # the bench harness, in the installed mode: run once (scripts/test)
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bench_smoke_tls_cases_and_access_log(tmp_path: Path) -> None:
    """`--tls` adds keep-alive, resumed and full handshakes over TLS for HAProxy, nginx and ours (the same
    certificate and suite, checked by the bench); ours-log is ours with a json access log, which must be
    written; api-post runs when named. The markdown goes between its own markers, leaving the main block
    alone."""
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    md.write_text("<!-- bench:begin -->\nmain results\n<!-- bench:end -->\n")
    targets = ("haproxy", "nginx", "ours", "ours-log")
    stdout, _ = run_bench(
        "--tls", "--cases", "small,api-post", "--targets", ",".join(targets), "--flips", "0",
        "--json", str(out), "--markdown", str(md), "--block", "bench-tls",
    )  # fmt: skip

    result = json.loads(out.read_text())
    assert set(result["cases"]) == {"small", "api-post", *TLS_CASES}
    assert result["tls"] == {
        "protocol": "TLSv1.3",
        "suite": "TLS_AES_256_GCM_SHA384",
        "group": "X25519",
        "alpn": "http/1.1",
    }
    for case in ("small", "api-post", *TLS_CASES):
        for target in targets:
            row = result["cases"][case][target]
            assert row["rps"] > 0 and row["cpu_us_per_req"] > 0 and row["errors"] == 0, (case, target, row)
        assert result["cases"][case]["ours-log"]["logged"] > 0, case  # the log was on, and written
        assert "logged" not in result["cases"][case]["ours"]
    assert result["cases"]["tls-small"]["ours"]["p99_us"] > 0
    assert result["cases"]["tls-handshake"]["ours"]["p99_us"] is None  # s_time reports no latency
    assert "TLS: every target negotiates TLSv1.3 TLS_AES_256_GCM_SHA384, X25519" in stdout
    assert re.search(r"^small: access log \(json, to a file\) costs", stdout, re.MULTILINE), stdout

    text = md.read_text()
    assert "<!-- bench:begin -->\nmain results\n<!-- bench:end -->" in text
    assert text.count("<!-- bench-tls:begin -->") == 1 and text.count("| ours-log |") == 2 + len(TLS_CASES)
