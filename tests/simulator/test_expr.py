"""Argo's condition language, evaluated without eval()."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from simulator.analysis.expr import ExprError, evaluate, evaluate_condition


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result == 'blue'", "blue", True),
        ('result == "blue"', "green", False),
        ("len(result) > 0", [1], True),
        ("len(result) > 0", "", False),
        ("result.major == '1'", {"major": "1"}, True),
        ("result.data.ok == true", {"data": {"ok": True}}, True),
        ("result[0] >= 0.95", [0.96], True),
        ("result['status'] != 'down'", {"status": "up"}, True),
        ("asInt(result) >= 200 && asInt(result) < 300", "204", True),
        ("asFloat(result) < 0.5 || result == 'NaN'", "0.7", False),
        ("result > 1 and result < 3", 2, True),
        ("not (result in [1, 2])", 3, True),
        ("result not in ['a', 'b']", "a", False),
        ("!(result == 1)", 1, False),
        ("result.Status == 999", {"Status": 0}, False),
        ("result.missing == nil", {}, True),
        ("result contains 'ok'", "all ok", True),
        ("result startsWith 'ab' and result endsWith 'yz'", "abxyz", True),
        ("result matches '^v[0-9]+$'", "v12", True),
        ("isNaN(result) == false", 1.0, True),
        ("default(result, 'x') == 'x'", None, True),
        ("result > 0 ? true : false", -1, False),
        ("-result == -3", 3, True),
        ("result % 2 == 1 and result / 2 > 1", 5, True),
    ],
)
def test_conditions(condition: str, result: Any, expected: bool) -> None:
    assert evaluate_condition(condition, result) is expected


@pytest.mark.parametrize(
    ("condition", "result", "error"),
    [
        ("result +", 1, "unexpected"),
        ("result == 'x", "x", "unexpected character"),
        ("asInt(result) > 1", "abc", "asInt: cannot convert"),
        ("result[3] == 1", [1], "out of range"),
        ("result", 1, "not a boolean"),
        ("result > 'a'", 1, "expected a number"),
        ("__import__('os')", 1, "unknown function"),
        ("exec == 1", 1, "unknown name"),
        ("result.a.b == 1", {"a": 1}, "cannot access"),
        ("1 % result > 0", 0, "integer divide by zero"),
        ("[1] in result", {}, "a map key cannot be an array"),
        ("result[result] == 1", {}, "cannot index a map with dict"),
        ("1 in 'abc'", 1, "cannot look for"),
        ("(" * 2000 + "1" + ")" * 2000 + " == 1", 1, "nested too deeply"),
    ],
)
def test_errors_are_expr_errors(condition: str, result: Any, error: str) -> None:
    with pytest.raises(ExprError, match=error):
        evaluate_condition(condition, result)


@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.sampled_from(["+", "-", "*", "<", "<=", ">", ">=", "=="]))
def test_arithmetic_and_comparison_match_python(a: int, b: int, op: str) -> None:
    expected = {"+": a + b, "-": a - b, "*": a * b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b}
    assert evaluate(f"x {op} y", {"x": a, "y": b}) == expected[op]


def test_precedence() -> None:
    assert evaluate("1 + 2 * 3 == 7 and not false || false", {}) is True
    assert evaluate("(1 + 2) * 3", {}) == 9


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="result.[]()'\"0123456789 +-*/%<>=!&|?:,abnotinlexy_#{}^`", max_size=40))
def test_any_text_is_a_value_or_an_expr_error(text: str) -> None:
    """Whatever a manifest says, evaluation never raises anything but ExprError (so it becomes Error)."""
    try:
        evaluate(text, {"result": {"a": [1, 2.5, "x"], "b": None}, "x": 1, "y": "s"})
        evaluate(f"all(result.a, {{{text}}}) || map(result.a, {text}) == []", {"result": {"a": [1, 2.5, "x"]}})
    except ExprError:
        pass
