"""One duration grammar (Go's `time.ParseDuration`) for the proxy config, the manifests and the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtest.cli import _duration as loadtest_duration
from proxy.config import ConfigError, parse_config
from proxy.duration import parse_duration
from simulator.k8s.fields import Fields, parse_duration as manifest_duration
from tests.proxy.conftest import proxy_config

VALID = [
    # Go's forms, as Kubernetes and Argo write them
    ("300ms", 0.3),
    ("1.5h", 5400.0),
    ("1m30s", 90.0),
    ("2h45m", 9900.0),
    ("10s", 10.0),
    ("0", 0.0),
    ("0s", 0.0),
    ("+5s", 5.0),
    ("1h0m0s", 3600.0),  # as Go prints an hour
    ("1h2m3s4ms5us6ns", 3723.004005006),
    ("250ms", 0.25),
    ("1.5s", 1.5),
    (".5s", 0.5),
    ("5.s", 5.0),
    ("5.0s", 5.0),
    ("1ns", 1e-9),
    ("1us", 1e-6),
    ("1µs", 1e-6),  # U+00B5 MICRO SIGN
    ("1μs", 1e-6),  # U+03BC GREEK SMALL LETTER MU
    ("100ms100ms", 0.2),  # Go adds repeated units
    ("0.000000001s", 1e-9),
    ("0.0000000001s", 0.0),  # below a nanosecond: truncated, as Go does
    # the one extension: a plain number is seconds (YAML numbers, `--duration 3`)
    ("3", 3.0),
    ("0.5", 0.5),
    (3, 3.0),
    (2.5, 2.5),
    (0, 0.0),
]

INVALID = [
    ("", "empty string"),
    ("s", "expected a number at 's'"),
    (".s", "expected a number at '.s'"),
    ("10x", "unknown unit 'x'"),
    ("5sec", "unknown unit 'sec'"),
    ("1d", "unknown unit 'd'"),  # Go has no days
    ("1m 30s", "unknown unit 'm '"),
    (" 5s", "expected a number at ' 5s'"),
    ("5s ", "unknown unit 's '"),
    ("1m30", "missing unit in duration '1m30'"),
    ("-1s", "must not be negative"),
    ("-0", "must not be negative"),
    (-1, "must not be negative"),
    ("1.5.5s", "missing unit in duration '1.5.5s'"),  # as Go says
    ("1e3s", "unknown unit 'e'"),
    ("9999999999h", "too large"),
    (True, "got a boolean"),
    (None, "got nothing"),
    ([1], "got a list"),
    ({"s": 1}, "got a mapping"),
    (float("inf"), "got inf"),
    (float("nan"), "got nan"),
]


@pytest.mark.parametrize(("value", "seconds"), VALID, ids=[repr(v) for v, _ in VALID])
def test_valid_forms(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(("value", "reason"), INVALID, ids=[repr(v) for v, _ in INVALID])
def test_invalid_forms_say_why(value: object, reason: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_duration(value)
    assert reason in str(excinfo.value)


def test_exact_where_go_is_exact() -> None:
    """Whole nanoseconds, not sums of float products: 300ms is the float nearest 0.3, 250ms is 0.25."""
    assert parse_duration("300ms") == 0.3 and parse_duration("250ms") == 0.25 and parse_duration("1.1s") == 1.1


def test_the_proxy_config_names_the_file_and_the_key_path() -> None:
    data = proxy_config({"blue": ["127.0.0.1:9101"]}, "blue", None, timeouts={"idle": "1m30s", "connect": "300ms"})
    config = parse_config(data, "proxy.yaml")
    assert config.timeouts.idle == 90.0 and config.timeouts.connect == 0.3
    data["timeouts"] = {"idle": "1m 30s"}
    with pytest.raises(ConfigError) as excinfo:
        parse_config(data, "proxy.yaml")
    assert str(excinfo.value).startswith("proxy.yaml: timeouts.idle: unknown unit 'm '")
    data["timeouts"] = {"idle": "0"}
    with pytest.raises(ConfigError, match="timeouts.idle: must be greater than zero"):
        parse_config(data, "proxy.yaml")


def test_manifests_name_the_field() -> None:
    assert manifest_duration is parse_duration  # the simulator's reader is the one grammar
    problems: list[str] = []
    fields = Fields({"interval": "2h45m", "initialDelay": "10x"}, "spec.metrics[0]", problems, [])
    assert fields.duration("interval") == 9900.0
    assert fields.duration("initialDelay") is None
    assert problems == [
        "spec.metrics[0].initialDelay: unknown unit 'x' in duration '10x' (units: ns, us, ms, s, m, h)"
    ], problems


def test_the_command_line_refuses_with_the_reason() -> None:
    assert loadtest_duration("1m30s") == 90.0 and loadtest_duration("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="unknown unit 'x'"):
        loadtest_duration("10x")


def test_no_other_duration_parser_is_left() -> None:
    """Every duration in the repository goes through proxy.duration: no module keeps a unit table of its own."""
    root = Path(__file__).resolve().parents[2]
    offenders = [
        str(path.relative_to(root))
        for package in ("proxy", "simulator", "loadtest", "bluegreen")
        for path in (root / package).rglob("*.py")
        if path.name != "duration.py" and ("def parse_duration" in (text := path.read_text()) or '"ms": 0.001' in text)
    ]
    assert offenders == []
