"""The config contract: valid files load into immutable objects; every refusal names file, key and reason."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config
from proxy.duration import parse_duration

REPO = Path(__file__).resolve().parents[2]

VALID = """
listeners:
  active:  {host: 127.0.0.1, port: 8080}
  preview: {host: 127.0.0.1, port: 8081}
admin: {host: 127.0.0.1, port: 8090, token: ${BG_TEST_TOKEN:-}}
pools:
  blue:  {endpoints: ["127.0.0.1:9101", "127.0.0.1:9102"]}
  green: {endpoints: ["127.0.0.1:9201"]}
routes: {active: blue, preview: green}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


def test_sample_config_loads() -> None:
    config = load_config(REPO / "config" / "proxy.yaml")
    (app,) = config.apps
    assert (app.name, app.hosts, app.active, app.preview) == ("default", (), "blue", "green")
    assert config.listeners["active"].port == 8080 and config.admin.port == 8090
    assert [p.name for p in config.pools] == ["blue", "green"]


def test_contract_example_and_immutability(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.pool("blue") is not None
    assert config.pool("blue").endpoints == (("127.0.0.1", 9101), ("127.0.0.1", 9102))  # type: ignore[union-attr]
    assert config.admin.token is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 2  # type: ignore[misc]


def test_env_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_TEST_TOKEN", "s3cret")
    monkeypatch.setenv("BG_PORT", "9999")
    text = VALID.replace("port: 8080", "port: ${BG_PORT}").replace("port: 8081", "port: ${BG_UNSET_PORT:-8181}")
    config = load_config(write(tmp_path, text))
    assert config.admin.token == "s3cret"
    assert config.listeners["active"].port == 9999 and config.listeners["preview"].port == 8181


@pytest.mark.parametrize(
    ("mutate", "path", "reason"),
    [
        (lambda t: t + "colour: blue\n", "colour", "unknown key"),
        (lambda t: t.replace("port: 8080", "port: eighty"), "listeners.active.port", "expected a port"),
        (lambda t: t.replace("port: 8080", "port: 70000"), "listeners.active.port", "0-65535"),
        (
            lambda t: t.replace("host: 127.0.0.1, port: 8081", "host: 'bad host!', port: 8081"),
            "listeners.preview.host",
            "bad host",
        ),
        (lambda t: t.replace('"127.0.0.1:9201"', '"127.0.0.1"'), "pools.green.endpoints[0]", "host:port"),
        (lambda t: t.replace('"127.0.0.1:9201"', '"127.0.0.1:99999"'), "pools.green.endpoints[0]", "bad port"),
        (lambda t: t.replace("preview: green}", "preview: purple}"), "routes.preview", "unknown pool 'purple'"),
        (lambda t: t.replace("active: blue,", "active: 7,"), "routes.active", "expected a non-empty string"),
        (lambda t: t.replace('{endpoints: ["127.0.0.1:9201"]}', "[1, 2]"), "pools.green", "expected a mapping"),
        (lambda t: t.replace("routes: {active: blue, preview: green}", ""), "routes", "required key is missing"),
        (
            lambda t: t.replace("host: 127.0.0.1, port: 8090", "host: 0.0.0.0, port: 8090"),
            "admin.token",
            "needs a token",
        ),
        (lambda t: t + "timeouts: {connect: soon}\n", "timeouts.connect", "duration"),
        (lambda t: t + "workers: 0\n", "workers", "at least 1"),
        (lambda t: t + "pools2: {}\n", "pools2", "unknown key"),
        (
            lambda t: t.replace("${BG_TEST_TOKEN:-}", "${BG_NEVER_SET_VAR}"),
            "admin.token",
            "BG_NEVER_SET_VAR is not set",
        ),
    ],
)
def test_refusals_name_file_key_and_reason(tmp_path: Path, mutate, path: str, reason: str) -> None:
    file = write(tmp_path, mutate(VALID))
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert info.value.source == str(file)
    assert info.value.path == path
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{file}: {path}: ")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    file = write(tmp_path, VALID + "routes: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML: line 1[01], column \d+"):
        load_config(file)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no-such.yaml: file not found"):
        load_config("/nonexistent/no-such.yaml")


def test_admin_off_loopback_with_token_is_accepted(tmp_path: Path) -> None:
    text = VALID.replace(
        "host: 127.0.0.1, port: 8090, token: ${BG_TEST_TOKEN:-}", "host: 0.0.0.0, port: 8090, token: t"
    )
    assert load_config(write(tmp_path, text)).admin.token == "t"


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("2s") == 2 and parse_duration("1m") == 60
    assert parse_duration(3) == 3.0
    with pytest.raises(ValueError):
        parse_duration("-1s")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID + "bogus: 1\n", "bogus: unknown key"),
        ("listeners: [\n", "invalid YAML"),
    ],
)
def test_cli_refuses_bad_config_without_traceback(tmp_path: Path, text: str, expected: str) -> None:
    file = write(tmp_path, text)
    proc = subprocess.run(
        [sys.executable, "-m", "bluegreen", "proxy", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(file) in lines[0] and expected in lines[0]
