"""The conformance table of docs/simulator.md ("The condition language"), evaluated row by row as written there:
Argo's own test cases, the forms of Argo's docs, and expr-lang's precedence and runtime rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from simulator.analysis.expr import ExprError, evaluate_condition

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"


def rows() -> list[tuple[str, Any, bool | None, str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The condition language", 1)[1].split("\n## ", 1)[0]
    out: list[tuple[str, Any, bool | None, str]] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        condition, result, expected, source = cells
        out.append(
            (
                condition.strip("`"),
                json.loads(result.strip("`")),
                None if expected == "error" else json.loads(expected.strip("`")),
                source,
            )
        )
    return out


ROWS = rows()


def test_the_table_is_there() -> None:
    assert len(ROWS) >= 50
    sources = {source.split(":")[0] for *_, source in ROWS}
    assert {"Argo test", "Argo example", "issue", "expr"} <= sources


@pytest.mark.parametrize(("condition", "result", "expected", "source"), ROWS, ids=[r[0] for r in ROWS])
def test_row(condition: str, result: Any, expected: bool | None, source: str) -> None:
    if expected is None:
        with pytest.raises(ExprError):
            evaluate_condition(condition, result)
    else:
        assert evaluate_condition(condition, result) is expected, source
