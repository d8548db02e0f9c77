"""The data plane runs compiled (mypyc, built at install where a C compiler is found) or pure, and says which:
`bluegreen proxy --version` and the `bluegreen_build_info` metric. CI runs the whole suite in both modes."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from proxy.dataplane import stale
from tests.support import REPO

FOLDER = REPO / "proxy" / "dataplane"
COMPILED_ON_DISK = any(p.suffix == ".so" for p in FOLDER.iterdir()) and not stale(str(FOLDER))


@pytest.mark.parametrize("pure", [False, True])
def test_version_says_which_mode_runs(pure: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_PURE"} | ({"BLUEGREEN_PURE": "1"} if pure else {})
    out = subprocess.run(
        [sys.executable, "-m", "bluegreen", "proxy", "--version"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    expected = "compiled with mypyc, head fields found in C)" if COMPILED_ON_DISK and not pure else "pure Python; "
    assert out.stdout.startswith("bluegreen ") and f"(data plane: {expected}" in out.stdout, out.stdout
    if pure:
        assert "pure Python; BLUEGREEN_PURE=1)" in out.stdout  # and why


def test_this_run_reports_its_mode_in_the_metrics() -> None:
    from proxy.dataplane import client, fieldscan, mode

    running = "compiled" if (client.__file__ or "").endswith(".so") else "pure"
    assert mode() == running
    assert fieldscan.IMPLEMENTATION == ("C" if running == "compiled" else "Python")  # built and loaded with them
    if os.environ.get("BLUEGREEN_PURE"):
        assert running == "pure"  # the .so files next to the sources were passed over


def test_the_install_compiled_the_data_plane_where_it_could() -> None:
    """setup.py marks the compiled modules optional (a failed build leaves the pure ones running, so an install
    never fails for it), which would also let a broken build pass every test in the pure mode twice. Where the
    install had what it needs, a C compiler and mypyc, the compiled modules must be there and current."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    could = shutil.which(compiler) is not None and importlib.util.find_spec("mypyc") is not None
    if could:
        assert COMPILED_ON_DISK, "a C compiler and mypyc are here, but no current compiled module: reinstall"
    else:
        assert not stale(str(FOLDER)), "compiled modules older than their sources, and no compiler to rebuild them"
