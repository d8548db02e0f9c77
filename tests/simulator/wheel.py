"""The wheel that test_packaging installs, built in the background.

mypyc compiles the data plane into it: about a minute of one core on these 2-core VMs. The build starts
as soon as the session knows a packaging test will run (`conftest.pytest_collection_finish`) and runs
beside the tests before them; the packaging tests wait for it. Its log is kept for a failure's message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "bluegreen", "proxy", "simulator", "loadtest")


class WheelBuild:
    """`pip wheel` of a copy of the sources into `dir/dist`, running until `wait`."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        src = dir / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")  # the wheel compiles its own (setup.py)
        for name in SOURCES:  # a copy: building in the checkout would race with other builds and leave build/
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=ignore)
            else:
                shutil.copy2(path, src / name)
        self.log = dir / "build.log"
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q"]
        argv += ["-w", str(dir / "dist"), str(src)]
        env = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_PURE"}  # compiled, whatever this run is
        with self.log.open("wb") as log:  # a file, not a pipe: a compiler's warnings must not fill it and stall
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.started = time.monotonic()

    def wait(self, timeout: float) -> Path:
        """The built wheel; an AssertionError with the build's log when it failed or took over `timeout` s."""
        try:
            code = self.proc.wait(timeout=max(0.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"building the wheel took over {timeout:.0f} s: {self._tail()}") from None
        assert code == 0, f"building the wheel failed ({code}): {self._tail()}"
        (wheel,) = (self.dir / "dist").glob("bluegreen-*.whl")
        return wheel

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


STASH = pytest.StashKey[WheelBuild]()  # the session's build, once started (conftest.py)
