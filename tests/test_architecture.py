"""The boundary: `proxy` never imports `simulator` (nor the load tests); the simulator core sees only
`proxy.control.api` (and `proxy.duration`, the grammar of durations both read). Composition roots
(`simulator/cli.py`, `simulator/demo.py`) may wire real proxies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROXY_MODULES = sorted(
    p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".") for p in (REPO / "proxy").rglob("*.py")
)


@pytest.mark.parametrize("module", PROXY_MODULES)
def test_proxy_module_imports_alone_without_simulator(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('simulator', 'loadtest', 'locust', 'gevent')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_import_linter_contracts() -> None:
    proc = subprocess.run(["lint-imports"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


COMPOSITION_ROOTS = {"simulator/cli.py", "simulator/demo.py"}
SHARED = {"proxy.control.api", "proxy.duration"}  # the control interface, and the one duration grammar


def test_simulator_core_uses_only_the_control_interface() -> None:
    offenders = []
    for path in sorted((REPO / "simulator").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in COMPOSITION_ROOTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{rel}: {n}" for n in names if n.split(".")[0] == "proxy" and n not in SHARED]
    assert offenders == []


@pytest.mark.parametrize("argv", [["proxy", "--help"], ["status", "--help"], ["switch", "--help"]])
def test_proxy_commands_load_no_simulator_or_load_test(argv: list[str]) -> None:
    """`python -X importtime` lists every module a command imports: the proxy's commands load the proxy alone."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bluegreen", *argv], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "proxy.cli" in modules
    bad = [m for m in modules if m.split(".")[0] in ("simulator", "loadtest", "locust", "gevent")]
    assert bad == []


def test_bluegreen_help_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "bluegreen", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    for command in ("proxy", "status", "switch", "demo", "apply", "rollouts", "loadtest"):
        assert command in proc.stdout
