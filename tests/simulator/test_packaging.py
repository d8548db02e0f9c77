"""The wheel as a user installs it: built from the sources, installed into a fresh venv, run from elsewhere.

`bluegreen demo` must find its bundled manifests and dashboard files inside the installed package, and
`bluegreen loadtest` its locustfile, with the results where the caller stands. The venv sees the system's
site-packages, so the dependencies resolve offline; the package itself comes from the wheel (checked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.simulator.wheel import STASH, WheelBuild
from tests.support import wait_until_sync

# Building the wheel (mypyc compiles the data plane) takes a minute or two on these 2-core VMs: it starts in the
# background once the session is collected (conftest.py) and the module's fixture waits for it. The wheel is
# compiled whatever BLUEGREEN_PURE says, so the suite's pure pass runs none of it again (`mode_independent`,
# scripts/test).
pytestmark = [pytest.mark.slow, pytest.mark.mode_independent, pytest.mark.timeout(600)]
BUILD_TIMEOUT = 300.0  # from the build's start


def venv_with(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return venv


@pytest.fixture(scope="module")
def wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = request.config.stash.get(STASH, None)
    if build is None:  # not started at collection (the conftest was not loaded): build it now
        build = WheelBuild(tmp_path_factory.mktemp("wheel-build"))
    return build.wait(BUILD_TIMEOUT)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv_with(tmp_path_factory.mktemp("wheel"), wheel)


def test_wheel_carries_manifests_static_files_and_locustfile(wheel: Path, installed: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "simulator/demo_manifests/rollout.yaml",
        "simulator/demo_manifests/services.yaml",
        "simulator/demo_manifests/smoke-test.yaml",
        "simulator/demo_manifests_prometheus/rollout.yaml",
        "simulator/demo_manifests_prometheus/services.yaml",
        "simulator/demo_manifests_prometheus/success-rate.yaml",
        "simulator/web/static/index.html",
        "simulator/web/static/app.js",
        "simulator/web/static/style.css",
        "loadtest/locustfile.py",
    ):
        assert required in names
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import simulator, loadtest; print(simulator.__file__); print(loadtest.__file__)"],
        cwd=installed.parent,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # a checkout on the path would shadow it
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(path.startswith(str(installed)) for path in where), where  # the wheel's, not the checkout's
    version = subprocess.run(
        [str(installed / "bin" / "bluegreen"), "proxy", "--version"],
        cwd=installed.parent,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BLUEGREEN_PURE")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    compiler = shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
    assert ("compiled with mypyc, head fields found in C" if compiler else "pure Python") in version, version


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), bytes(response.read())


def serve_and_check(proc: subprocess.Popen[str], installed: Path, err: Path) -> None:
    assert proc.stdout is not None
    banner: list[str] = []
    while not any(line.startswith("Ctrl-C") for line in banner):
        line = proc.stdout.readline()
        assert line, f"the demo exited ({proc.wait()}): {err.read_text()}"
        banner.append(line)
    text = "".join(banner)
    assert "simulator/demo_manifests" in text and str(installed) in text
    ports = {
        name: int(port) for name, port in re.findall(r"(dashboard|live traffic|preview) +http://[^:]+:(\d+)", text)
    }
    assert len(ports) == 3 and 0 not in ports.values(), text
    kube = re.search(r"Kubernetes API +(http://\S+) .*export KUBECONFIG=(\S+)\)", text)
    assert kube is not None, text
    assert _get(f"{kube[1]}/api")[0] == 200 and "current-context" in Path(kube[2]).read_text(encoding="utf-8")
    admin = ports["dashboard"]
    assert _get(f"http://127.0.0.1:{admin}/healthz")[0] == 200
    status, page = _get(f"http://127.0.0.1:{admin}/")  # the dashboard's static files came with the wheel
    assert status == 200 and b"<html" in page.lower()

    def served() -> bytes:  # the bundled Rollout comes up and the proxy serves its pods (b"" until then)
        status, body = _get(f"http://127.0.0.1:{ports['live traffic']}/color")
        return body if status == 200 else b""

    body = wait_until_sync(served, 60, 0.3, message="the live listener serving the bundled rollout", ignore=(OSError,))
    assert json.loads(body) == "blue"


def test_demo_from_the_installed_wheel_in_another_directory(installed: Path, tmp_path: Path) -> None:
    argv = [str(installed / "bin" / "bluegreen"), "demo", "--active-port", "0", "--preview-port", "0"]
    argv += ["--admin-port", "0", "--kube-port", "0"]
    env = {k: v for k, v in os.environ.items() if k not in ("BLUEGREEN_ADMIN_TOKEN", "PYTHONPATH")}
    err = tmp_path / "demo.stderr"
    with (
        err.open("w") as stderr,
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
    ):
        try:
            serve_and_check(proc, installed, err)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
    assert code == 0


def test_loadtest_from_the_installed_wheel_writes_results_where_the_caller_stands(
    installed: Path, tmp_path: Path
) -> None:
    argv = [str(installed / "bin" / "bluegreen"), "loadtest", "--users", "2", "--duration", "3s"]
    argv += ["--switch-every", "0.5s", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k not in ("BLUEGREEN_ADMIN_TOKEN", "PYTHONPATH")}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results,) = (tmp_path / "results").glob("loadtest-*")
    summary = json.loads((results / "summary.json").read_text())
    assert summary["requests"] > 0 and summary["failures"] == 0
    assert (results / "locust_stats.csv").exists()
    assert f"-> {results}" in proc.stdout
