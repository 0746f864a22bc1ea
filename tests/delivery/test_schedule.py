from __future__ import annotations

from email.utils import formatdate

import pytest

from appliance.delivery.dispatcher import judge
from appliance.delivery.schedule import STANDARD_DELAYS, RetrySchedule, parse_retry_after


def test_standard_schedule_is_the_standard_webhooks_one() -> None:
    hours = 3600
    expected: tuple[float, ...] = (0, 5, 5 * 60, 30 * 60, 2 * hours, 5 * hours, 10 * hours, 14 * hours,
                                   20 * hours, 24 * hours)
    assert expected == STANDARD_DELAYS
    assert RetrySchedule().max_attempts == 10


def test_delays_follow_the_schedule_then_none() -> None:
    schedule = RetrySchedule(jitter=0.0)
    assert [schedule.next_delay(n) for n in range(1, 11)] == [*STANDARD_DELAYS[1:], None]


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_stays_within_its_fraction(draw: float) -> None:
    schedule = RetrySchedule(jitter=0.1, rng=lambda: draw)
    delay = schedule.next_delay(2)
    assert delay is not None and 270 <= delay <= 330


def test_retry_after_is_never_undercut_but_is_capped() -> None:
    schedule = RetrySchedule(jitter=0.0)
    assert schedule.next_delay(1, retry_after=60) == 60
    assert schedule.next_delay(2, retry_after=60) == 300
    assert schedule.next_delay(1, retry_after=10 * 86400) == 86400


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


def test_judge_maps_answers_to_verdicts() -> None:
    schedule = RetrySchedule(delays=(0, 5, 300), jitter=0.0)
    assert judge(204, None, 1, schedule).kind == "delivered"
    assert judge(410, None, 1, schedule).kind == "disabled"
    assert judge(500, None, 1, schedule) == judge(None, None, 1, schedule)
    assert judge(500, None, 1, schedule).delay == 5 and judge(500, None, 1, schedule).pause is None
    slow = judge(429, None, 1, schedule)
    assert slow.kind == "retry" and slow.pause == 5
    assert judge(502, 30, 2, schedule).pause == 300
    assert judge(503, 30, 1, schedule).pause == 30
    assert judge(500, None, 3, schedule).kind == "dead"
    assert judge(301, None, 1, schedule).kind == "retry"
