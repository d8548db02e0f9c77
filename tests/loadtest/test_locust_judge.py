"""The stale-answer judge and the histograms of the Locust run, on synthetic records (no Locust, no sockets)."""

from __future__ import annotations

import pytest

from loadtest.flipcheck import ACTIVE, PREVIEW, FlipJudge, Histogram
from proxy.duration import parse_duration


def judge_with_flips() -> FlipJudge:
    """blue live from t=0; flip to green starts at 10, acked at 11; flip to blue starts at 20, acked at 21."""
    j = FlipJudge(near_window=1.0)
    j.set_initial("blue", "green", 0.0)
    f = j.flip_started("green", "blue", 10.0)
    assert f is not None
    j.flip_acked(f, 11.0)
    f = j.flip_started("blue", "green", 20.0)
    assert f is not None
    j.flip_acked(f, 21.0)
    return j


def test_old_color_after_the_ack_is_stale() -> None:
    j = judge_with_flips()
    j.judge([(12.0, 12.5, "blue", ACTIVE)])
    assert j.stale == 1 and "served by blue" in j.stale_examples[0]


def test_new_color_and_requests_begun_before_the_ack_are_not_stale() -> None:
    j = judge_with_flips()
    j.judge(
        [
            (12.0, 12.5, "green", ACTIVE),  # the acked color
            (10.5, 10.6, "blue", ACTIVE),  # started during the flip: either color
            (10.5, 10.6, "green", ACTIVE),
            (9.0, 12.0, "blue", ACTIVE),  # started before the flip
            (5.0, 5.1, "blue", ACTIVE),  # under the initial routes
            (12.0, 12.5, "blue", PREVIEW),  # preview is the old active
        ]
    )
    assert j.stale == 0, j.stale_examples


def test_a_flip_that_began_before_the_answer_allows_its_color() -> None:
    j = judge_with_flips()
    j.judge([(19.5, 20.2, "blue", ACTIVE)])  # started under green (acked), answered after the flip to blue began
    assert j.stale == 0
    j.judge([(19.5, 19.9, "blue", ACTIVE)])  # answered before that flip began: stale
    assert j.stale == 1


def test_an_unacknowledged_flip_in_progress_counts_as_begun() -> None:
    j = judge_with_flips()
    assert j.flip_started("green", "blue", 30.0) is not None  # no ack yet (or it failed)
    j.judge([(29.0, 30.5, "green", ACTIVE)])
    assert j.stale == 0
    j.judge([(30.2, 30.5, "green", PREVIEW)])  # preview was green before the flip started, still allowed
    assert j.stale == 0


def test_requests_before_the_first_routes_read_are_unjudged() -> None:
    j = FlipJudge()
    j.set_initial("blue", "green", 5.0)
    j.judge([(4.0, 4.1, "green", ACTIVE)])
    assert (j.stale, j.unjudged) == (0, 1)


def test_summary_counts_colors_flips_and_first_new_color() -> None:
    j = judge_with_flips()
    j.judge([(10.2, 10.3, "blue", ACTIVE), (10.4, 10.45, "green", ACTIVE), (11.5, 11.6, "green", ACTIVE)])
    s = j.summary()
    assert s["requests"] == 3 and s["colors_seen"] == ["blue", "green"]
    assert s["flips"]["count"] == 2 and s["flips"]["errors"] == 0
    first = s["flips"]["first_new_color_after_start"]
    assert first["count"] == 1 and first["p50_ms"] == pytest.approx(450.0)  # flip at 10, green answered at 10.45
    assert s["flips"]["without_new_color_response"] == 1  # nothing asked after the flip back to blue
    assert "spanning_flip" not in s["latency"]  # no request was in flight when a flip began
    assert s["latency"]["active/green"]["count"] == 2


def test_flip_log_is_capped() -> None:
    j = FlipJudge(max_flips=2)
    assert j.flip_started("green", "blue", 1.0) is not None
    assert j.flip_started("blue", "green", 2.0) is not None
    assert j.flip_started("green", "blue", 3.0) is None


def test_histogram_percentiles_and_bucket_error() -> None:
    h = Histogram()
    for us in range(1, 10_001):
        h.add(us)
    assert h.count == 10_000 and h.max_us == 10_000
    assert h.percentile(50) == pytest.approx(5.0, rel=0.01)
    assert h.percentile(99) == pytest.approx(9.9, rel=0.01)
    assert h.percentile(100) == 10.0
    assert len(h.buckets) < 2_000  # bounded: three significant digits


def test_expected_interval_correction_fills_the_missed_sends() -> None:
    h = Histogram()
    for _ in range(99):
        h.add_with_expected_interval(1_000, 10_000)  # 1 ms answers, one send every 10 ms
    h.add_with_expected_interval(1_000_000, 10_000)  # one 1 s stall: 99 sends were never made
    assert h.count == 99 + 1 + 99
    assert h.percentile(50) == pytest.approx(10.0, rel=0.05)  # the stall now weighs as it would have open-loop
    plain = Histogram()
    for _ in range(99):
        plain.add(1_000)
    plain.add(1_000_000)
    assert plain.percentile(99) == 1.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("0.5s", 0.5), ("200ms", 0.2), ("2m", 120.0), ("1m30s", 90.0), ("3", 3.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "10x", "1m 30s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
