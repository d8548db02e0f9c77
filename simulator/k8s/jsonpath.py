"""The Kubernetes JSONPath subset Argo's web provider uses: `{$.data.ok}`, `{$.items[0].x}`, `[*]`."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["JsonPathError", "select"]


class JsonPathError(Exception):
    pass


_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[(\*|-?\d+|'[^']*'|\"[^\"]*\")\]|\.\*")


def select(document: Any, path: str) -> Any:
    """The value at `path`; a wildcard gives a list. An empty path is the whole document."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text in ("", "$", "."):
        return document
    text = text.removeprefix("$")
    if not text.startswith((".", "[")):
        text = "." + text
    values: list[Any] = [document]
    wildcard = False
    pos = 0
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            raise JsonPathError(f"unsupported JSONPath {path!r} at {text[pos:]!r}")
        pos = m.end()
        name, index = m.group(1), m.group(2)
        step: list[Any] = []
        for value in values:
            if m.group(0) == ".*" or index == "*":
                wildcard = True
                step += list(value.values()) if isinstance(value, dict) else list(value or [])
            elif name is not None or (index and index[0] in "'\""):
                key = name if name is not None else index[1:-1]
                if not isinstance(value, dict) or key not in value:
                    raise JsonPathError(f"{key} is not found")
                step.append(value[key])
            else:
                i = int(index)
                if not isinstance(value, list) or not -len(value) <= i < len(value):
                    raise JsonPathError(f"array index out of bounds: index {i}")
                step.append(value[i])
        values = step
    return values if wildcard else values[0]
