"""Reading manifest JSON with errors that name the object and the field path.

`Fields` walks one mapping; every problem is recorded as `path: reason` and all of them are raised
together, so a user fixes a manifest in one round. Fields that Argo knows but the simulator does not
implement are collected separately as notices: they never stop a load, and they are never silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Durations as Argo writes them (Go's `1m30s`): the one grammar of the project, shared with the proxy config
# and the CLI. A field's problem is reported as `path: reason`, the reason from the parser.
from proxy.duration import parse_duration

__all__ = ["Fields", "ManifestError", "parse_duration"]


class ManifestError(Exception):
    """One or more problems in one object; `str()` is one line per problem, prefixed by the object."""

    def __init__(self, obj: str, problems: list[str]) -> None:
        self.obj = obj
        self.problems = problems
        super().__init__("\n".join(f"{obj}: {p}" if obj else p for p in problems))


class Fields:
    def __init__(self, data: object, path: str, problems: list[str], notices: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.notices = notices
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem("", f"expected a mapping, got {type(data).__name__}")
            data = {}
        self.data: dict[str, Any] = data

    @classmethod
    def root(cls, data: object, path: str = "") -> Fields:
        return cls(data, path, [], [])

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, reason: str) -> None:
        where = self._at(key) if key else (self.path or "<root>")
        self.problems.append(f"{where}: {reason}")

    def notice(self, key: str, reason: str = "is not implemented by the simulator; ignored") -> None:
        self.notices.append(f"{self._at(key)} {reason}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def sub(self, key: str) -> Fields:
        return Fields(self.data.get(key), self._at(key), self.problems, self.notices)

    def items(self, key: str) -> list[Fields]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(key, f"expected a list, got {type(value).__name__}")
            return []
        return [Fields(v, f"{self._at(key)}[{i}]", self.problems, self.notices) for i, v in enumerate(value)]

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.data.get(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {value!r}")
            return default
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"expected an integer, got {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.problem(key, f"must be >= {minimum}, got {value}")
            return default
        return value

    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r}")
            return default
        return value

    def str_map(self, key: str) -> dict[str, str]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.problem(key, "expected a mapping of strings")
            return {}
        return {k: str(v) for k, v in value.items() if v is not None}

    def duration(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return None

    def known(self, implemented: Iterable[str], unimplemented: Iterable[str] = ()) -> None:
        """Refuse keys Argo does not know; report keys it knows but the simulator ignores."""
        implemented = set(implemented)
        unimplemented = set(unimplemented)
        for key in self.data:
            if key in implemented:
                continue
            if key in unimplemented:
                if self.data[key] is not None:
                    self.notice(key)
            else:
                self.problem(key, "unknown field")
