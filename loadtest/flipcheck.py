"""Judge a Locust run against the flip log: stale responses, first new-color response, latency histograms.

Pure Python with no Locust import, so the tests can exercise it directly. The Locust master (or the
local runner) owns one `FlipJudge`: the switcher appends each flip to it (start time before the POST,
ack time after the answer) and every finished request is judged as a record
`(t_start, t_end, color, role)` (wall-clock seconds, role 0 = active listener, 1 = preview).

A request is *stale* when it started after a flip was acknowledged and was served by a color that no
route in effect during the request names: the acknowledged flip's color, or the color of any later flip
that began before the response arrived (the proxy reads its route table once, at some instant between
the two). Both clock biases are safe: flip start is stamped before the POST and the ack after the answer,
a request's start before it is sent and its end after it is read, so the check can miss nothing that is
certainly stale and never flags a request that may legitimately have seen a newer route.

Records are judged as they arrive and then dropped: memory is bounded by the flip log (capped) and the
histograms (a few hundred buckets each).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

ACTIVE, PREVIEW = 0, 1
ROLE_NAMES = ("active", "preview")
MAX_EXAMPLES = 20
MAX_FILL = 100_000  # cap on the coordinated-omission fill of one sample


@dataclass(slots=True)
class Flip:
    active: str
    preview: str | None
    started: float
    acked: float | None = None
    error: str | None = None
    first_new: float | None = None  # t_end of the first new-color response among requests started after `started`

    def color(self, role: int) -> str | None:
        return self.active if role == ACTIVE else self.preview


class Histogram:
    """Latencies in microseconds, kept to 3 significant digits (≤ 0.5 % error): bounded, mergeable."""

    __slots__ = ("buckets", "count", "max_us")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max_us = 0

    @staticmethod
    def bucket(us: int) -> int:
        if us < 1000:
            return us
        scale: int = 10 ** (len(str(us)) - 3)
        return (us + scale // 2) // scale * scale

    def add(self, us: int, n: int = 1) -> None:
        us = max(us, 0)
        key = self.bucket(us)
        self.buckets[key] = self.buckets.get(key, 0) + n
        self.count += n
        self.max_us = max(self.max_us, us)

    def add_with_expected_interval(self, us: int, interval_us: int) -> None:
        """HdrHistogram's correction: a closed-loop user that waited `us` missed the requests it would have
        sent every `interval_us` meanwhile; record them with the latencies they would have seen."""
        self.add(us)
        if interval_us <= 0:
            return
        missing, n = us - interval_us, 0
        while missing >= interval_us and n < MAX_FILL:
            self.add(missing)
            missing -= interval_us
            n += 1

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = math.ceil(q / 100 * self.count)
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return min(key, self.max_us) / 1000
        return self.max_us / 1000

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        for q in (50, 95, 99, 99.9):
            out[f"p{q:g}_ms"] = self.percentile(q)
        out["max_ms"] = self.max_us / 1000 if self.count else None
        return out


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """p50/p99/max of a small list (flip figures: one value per flip)."""
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)] * 1000, 3)

    return {"count": len(ordered), "p50_ms": pick(50), "p99_ms": pick(99), "max_ms": round(ordered[-1] * 1000, 3)}


@dataclass
class FlipJudge:
    max_flips: int = 100_000
    expected_interval: float | None = None  # seconds between a paced user's requests (constant_throughput)
    near_window: float = 0.1  # "just after a flip": requests started within this many seconds of a flip's start
    initial: Flip | None = None  # the routes read before the first flip (acked when read)
    flips: list[Flip] = field(default_factory=list)
    stale: int = 0
    stale_examples: list[str] = field(default_factory=list)
    unjudged: int = 0  # requests that started before the initial routes were read
    switcher_errors: list[str] = field(default_factory=list)  # the switcher itself failed (admin API unreachable)
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> color -> count
    latency: dict[str, Histogram] = field(default_factory=dict)  # "all", "active/blue", "spanning_flip", ...
    first_t: float | None = None
    last_t: float | None = None
    near_flip_starts: int = 0
    flipping_starts: int = 0  # requests started after the first flip began: the steady, flipping part of the run
    flipping_last: float = 0.0
    _starts: list[float] = field(default_factory=list)
    _ack_times: list[float] = field(default_factory=list)
    _ack_index: list[int] = field(default_factory=list)

    # --- the flip log (written by the switcher, one greenlet) ------------------------------------------

    def set_initial(self, active: str, preview: str | None, t: float) -> None:
        self.initial = Flip(active, preview, t, t)

    def flip_started(self, active: str, preview: str | None, t: float) -> Flip | None:
        if len(self.flips) >= self.max_flips:
            return None
        flip = Flip(active, preview, t)
        self.flips.append(flip)
        self._starts.append(t)
        return flip

    def flip_acked(self, flip: Flip, t: float) -> None:
        flip.acked = t
        # Flips are sequential, so ack times only grow; a failed flip stays in the log unacked, which only
        # widens what later requests may legitimately see.
        self._ack_times.append(t)
        self._ack_index.append(len(self.flips) - 1)

    def flip_failed(self, flip: Flip, error: str) -> None:
        flip.error = error

    # --- records ------------------------------------------------------------------------------------------

    def _hist(self, key: str) -> Histogram:
        h = self.latency.get(key)
        if h is None:
            h = self.latency[key] = Histogram()
        return h

    def judge(self, records: Iterable[Sequence[Any]]) -> None:
        interval_us = int(self.expected_interval * 1e6) if self.expected_interval else 0
        for t_start, t_end, color, role in records:
            self._judge_one(float(t_start), float(t_end), str(color), int(role), interval_us)

    def _judge_one(self, t_start: float, t_end: float, color: str, role: int, interval_us: int) -> None:
        role_name = ROLE_NAMES[role]
        per_role = self.requests.setdefault(role_name, {})
        per_role[color] = per_role.get(color, 0) + 1
        self.first_t = t_start if self.first_t is None else min(self.first_t, t_start)
        self.last_t = t_end if self.last_t is None else max(self.last_t, t_end)

        us = int((t_end - t_start) * 1e6)
        self._hist("all").add(us)
        self._hist(f"{role_name}/{color}").add(us)
        if interval_us:
            self._hist("all_corrected").add_with_expected_interval(us, interval_us)

        starts = self._starts
        after = bisect.bisect_right(starts, t_start)  # flips[after] is the first flip that began after t_start
        if after < len(starts) and starts[after] <= t_end:
            self._hist("spanning_flip").add(us)
        if after > 0:
            self.flipping_starts += 1
            self.flipping_last = max(self.flipping_last, t_start)
            flip = self.flips[after - 1]
            if t_start - flip.started < self.near_window:
                # Unlike spanning_flip (length-biased: a long request is likelier to span a flip), this set is
                # chosen by start time alone, so its percentiles compare fairly with "all".
                self.near_flip_starts += 1
                self._hist("started_after_flip").add(us)
            if role == ACTIVE and color == flip.active and (flip.first_new is None or t_end < flip.first_new):
                flip.first_new = t_end

        k = bisect.bisect_right(self._ack_times, t_start) - 1
        if k >= 0:
            base: Flip = self.flips[self._ack_index[k]]
            nxt = self._ack_index[k] + 1
        elif self.initial is not None and t_start >= self.initial.started:
            base, nxt = self.initial, 0
        else:
            self.unjudged += 1
            return
        if color == base.color(role):
            return
        # Any flip that began before the response arrived may have been the route this request read.
        while nxt < len(self.flips) and starts[nxt] <= t_end:
            if self.flips[nxt].color(role) == color:
                return
            nxt += 1
        self.stale += 1
        if len(self.stale_examples) < MAX_EXAMPLES:
            self.stale_examples.append(
                f"{role_name} request started {(t_start - (base.acked or base.started)) * 1000:.1f} ms after the ack"
                f" of {base.color(role)}, served by {color}"
            )

    # --- the report ---------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        done = [f for f in self.flips if f.acked is not None]
        ack = [f.acked - f.started for f in done if f.acked is not None]
        after_start = [f.first_new - f.started for f in done if f.first_new is not None]
        after_ack = [f.first_new - f.acked for f in done if f.first_new is not None and f.acked is not None]
        total = sum(sum(c.values()) for c in self.requests.values())
        # The send rate while flipping (from the first flip on: no ramp-up), else over the whole run.
        span = (self.last_t - self.first_t) if self.first_t is not None and self.last_t is not None else 0.0
        rate = total / span if span > 0 else None
        if self.flips and self.flipping_last > self.flips[0].started:
            rate = self.flipping_starts / (self.flipping_last - self.flips[0].started)
        near = None
        if rate and done:
            window = self.near_window * len(self.flips)
            near = round(self.near_flip_starts / window / rate, 3)
        return {
            "requests": total,
            "requests_by_color": self.requests,
            "colors_seen": sorted({c for role in self.requests.values() for c in role}),
            "stale": self.stale,
            "stale_examples": self.stale_examples,
            "unjudged": self.unjudged,
            "throughput_rps": round(rate, 1) if rate else None,
            "flips": {
                "count": len(done),
                "errors": sum(1 for f in self.flips if f.error is not None) + len(self.switcher_errors),
                "errors_examples": (self.switcher_errors + [f.error for f in self.flips if f.error])[:MAX_EXAMPLES],
                "ack": summarize(ack),
                "first_new_color_after_start": summarize(after_start),
                "first_new_color_after_ack": summarize(after_ack),
                "without_new_color_response": sum(1 for f in done if f.first_new is None),
                "start_rate_after_flip_vs_mean": near,
            },
            "latency": {k: self.latency[k].to_json() for k in sorted(self.latency)},
        }
