"""The `job` analysis provider, simulated: Argo's sleep/exit Job templates run on the cluster clock.

A Job's container command is read as a tiny shell script: `sleep N`, `exit C`, `true`, `false`,
joined by `&&`, `||` or `;`. Argo's `random-fail` example (`$RANDOM`) exits 0 or 1 at random. Any
other command cannot be simulated safely and fails the measurement with an Error that says so; running
real commands is deliberately not offered here.
"""

from __future__ import annotations

import random
import re
import shlex
from dataclasses import dataclass
from typing import Any

__all__ = ["JobError", "JobPlan", "plan_job"]


class JobError(Exception):
    pass


@dataclass(frozen=True)
class JobPlan:
    duration: float
    exit_code: int


_SLEEP = re.compile(r"^sleep\s+(\d+(?:\.\d+)?)s?$")
_EXIT = re.compile(r"^exit\s+(-?\d+)$")


def _script(spec: dict[str, Any]) -> str:
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        raise JobError("job has no containers")
    container = containers[0]
    words = [str(w) for w in (container.get("command") or [])] + [str(w) for w in (container.get("args") or [])]
    # `sh -c [-x] SCRIPT`: the script is the first word after the options.
    if len(words) >= 2 and words[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and words[1] == "-c":
        rest = [w for w in words[2:] if not w.startswith("-")]
        return rest[0] if rest else ""
    return shlex.join(words)


def plan_job(spec: dict[str, Any], rng: random.Random) -> JobPlan:
    """How long the Job runs and how it exits."""
    script = _script(spec).strip()
    if "$RANDOM" in script:
        return JobPlan(0.0, rng.randrange(2))
    duration = 0.0
    status = 0
    # Sequential evaluation with short-circuit: `a && b` runs b only on success, `a || b` only on failure.
    parts = re.split(r"\s*(&&|\|\||;)\s*", script) if script else []
    op = ";"
    for i, part in enumerate(parts):
        if i % 2 == 1:
            op = part
            continue
        if (op == "&&" and status != 0) or (op == "||" and status == 0):
            continue
        if m := _SLEEP.match(part):
            duration += float(m.group(1))
            status = 0
        elif m := _EXIT.match(part):
            return JobPlan(duration, int(m.group(1)) & 0xFF)
        elif part in ("true", ":"):
            status = 0
        elif part == "false":
            status = 1
        else:
            raise JobError(f"cannot simulate job command {part!r} (supported: sleep N, exit C, true, false)")
    return JobPlan(duration, status)
