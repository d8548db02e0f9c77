"""The simulator core reaches the proxy only through `proxy.control.api` (DESIGN.md, the boundary), and reads
durations with `proxy.duration`, the grammar the proxy config and the CLI share (it imports nothing)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import simulator

ROOTS = {"cli.py", "demo.py"}  # composition roots may start a real proxy (paths inside `simulator/`)
SHARED = {"proxy.control.api", "proxy.duration"}  # the control interface, and the one duration grammar


def proxy_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "proxy"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "proxy":
            found.add(node.module)
    return found


def test_core_imports_only_the_control_interface() -> None:
    package = Path(simulator.__file__).parent
    offenders = {
        rel: sorted(imports - SHARED)
        for path in sorted(package.rglob("*.py"))
        if (rel := path.relative_to(package).as_posix()) not in ROOTS and (imports := proxy_imports(path)) - SHARED
    }
    assert offenders == {}


def test_core_import_does_not_load_proxy_internals() -> None:
    code = (
        "import sys, simulator.cluster, simulator.web.api, simulator.web.client;"
        "print(sorted(m for m in sys.modules if m.startswith('proxy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['proxy', 'proxy.control', 'proxy.control.api', 'proxy.duration']"
