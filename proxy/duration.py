"""One duration grammar for the proxy config, the manifests and the command line: Go's `time.ParseDuration`.

Kubernetes and Argo Rollouts write durations as Go parses them: a sequence of decimal numbers, each
with a unit, such as `300ms`, `1.5h`, `1m30s` or `2h45m`; the units are `ns`, `us` (or `µs`), `ms`,
`s`, `m` and `h`; `0` needs no unit. One extension, for what YAML and a command line hand over: a
plain number (`timeout: 5` in YAML, `--duration 3` on a command line) is seconds. Negative durations,
which Go accepts, are refused: every duration here is a timeout, an interval or a delay.

`parse_duration` raises ValueError with the reason only; each caller says where (the config file and
key path, the manifest object and field, the command-line flag), in its own error style.

This module imports nothing: it is the proxy's lowest layer, below `proxy.config`, and the one module
besides `proxy.control.api` that the simulator may import from the proxy.
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["UNITS", "parse_duration"]

# Nanoseconds per unit, as in Go's time package (which also accepts U+00B5 and U+03BC for micro).
UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_MAX_NS = 2**63 - 1  # Go's limit (about 292 years)
_EXAMPLES = "such as 300ms, 1m30s or 2h45m"
_DIGITS = "0123456789"


def parse_duration(value: object) -> float:
    """Seconds in `value`: a Go duration string, or a plain number of seconds. ValueError says why not."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration {_EXAMPLES}, got {_describe(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"expected a duration {_EXAMPLES}, got {value!r}")
        if value < 0:
            raise ValueError(f"a duration must not be negative, got {value!r}")
        return float(value)
    return _parse(value)


def _parse(text: str) -> float:
    if not text:
        raise ValueError(f"expected a duration {_EXAMPLES}, got an empty string")
    rest = text
    if rest[0] in "+-":
        if rest[0] == "-":
            raise ValueError(f"a duration must not be negative, got {text!r}")
        rest = rest[1:]
    if rest == "0":
        return 0.0
    plain = _number(rest)
    if plain is not None and plain[1] == "":  # a number without a unit: seconds (the one extension)
        return float(plain[0])
    total = Fraction(0)
    while rest:
        parsed = _number(rest)
        if parsed is None:
            raise ValueError(f"invalid duration {text!r}: expected a number at {rest!r} ({_EXAMPLES})")
        number, rest = parsed
        end = 0
        while end < len(rest) and rest[end] not in _DIGITS and rest[end] != ".":
            end += 1
        unit, rest = rest[:end], rest[end:]
        if not unit:
            raise ValueError(f"missing unit in duration {text!r} (units: ns, us, ms, s, m, h)")
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r} (units: ns, us, ms, s, m, h)")
        total += number * UNITS[unit]
        if total > _MAX_NS:
            raise ValueError(f"duration {text!r} is too large")
    return float(Fraction(int(total), 10**9))  # whole nanoseconds, as Go truncates


def _number(text: str) -> tuple[Fraction, str] | None:
    """A leading decimal number (`5`, `1.5`, `.5`, `5.`) and what follows it, or None."""
    end = 0
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    whole = text[:end]
    fraction = ""
    if end < len(text) and text[end] == ".":
        start = end = end + 1
        while end < len(text) and text[end] in _DIGITS:
            end += 1
        fraction = text[start:end]
    if not whole and not fraction:
        return None
    value = Fraction(int(whole or "0")) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
    return value, text[end:]


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    kinds = {bool: "a boolean", dict: "a mapping", list: "a list"}
    return kinds.get(type(value), repr(value))
