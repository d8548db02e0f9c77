"""The simulator's tests are `mode_independent`: the simulator is never compiled, and the proxy it drives
forwards requests the way tests/proxy checks in both modes. So scripts/test's pure pass (BLUEGREEN_PURE=1)
runs tests/proxy and tests/loadtest again, not these: on a slow 2-core VM that pass took 402 s with them and
291 s without, and the whole CI run 20 min 8 s with them, 18 min without."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.simulator.wheel import STASH, WheelBuild

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before the `-m` selection deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.mode_independent)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the wheel now when a packaging test is among those that will run (after `-m` and `-k`
    have deselected): it compiles beside the tests that run before it."""
    if session.config.option.collectonly:
        return
    if any(item.path.name == "test_packaging.py" for item in session.items):
        session.config.stash[STASH] = WheelBuild(Path(tempfile.mkdtemp(prefix="bluegreen-wheel-")))


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(STASH, None)
    if build is not None:
        build.stop()
        shutil.rmtree(build.dir, ignore_errors=True)
