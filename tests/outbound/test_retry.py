"""The retry plan: exponential backoff with jitter, the 5-day give-up, recipients that come apart."""

from __future__ import annotations

import itertools

from appliance.outbound.model import DeliveryOutcome, RecipientRefusal
from appliance.outbound.retry import Backoff, plan_after

DAY = 86_400.0
RETRY_FOR = 5 * DAY
T0 = 1_800_000_000.0
NO_JITTER = Backoff(jitter=0.0)


def retry(detail: str = "451 4.7.1 greylisted", code: int | None = 451, **kw: object) -> DeliveryOutcome:
    return DeliveryOutcome(status="retry", code=code, detail=detail, **kw)  # type: ignore[arg-type]


def test_delays_double_from_five_minutes_up_to_four_hours() -> None:
    assert [NO_JITTER.delay(n) for n in range(1, 9)] == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]
    assert NO_JITTER.delay(10_000) == 14400  # no overflow however long it went on


def test_jitter_stays_within_its_fraction() -> None:
    low, high = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 0.999999)
    assert low.delay(1) == 240 and 359.9 < high.delay(1) <= 360


def test_a_temporary_failure_keeps_the_job_queued_for_the_next_slot() -> None:
    plan = plan_after(retry(), recipients=["a@x.org"], attempts=1, queued_at=T0, now=T0 + 1, retry_for=RETRY_FOR,
                      backoff=NO_JITTER)
    assert plan.status == "queued" and plan.next_attempt_at == T0 + 1 + 300
    assert plan.delivered == plan.rejected == plan.expired == plan.requeue == []


def test_the_schedule_over_five_days_with_a_pinned_clock_ends_in_a_bounce_at_the_deadline() -> None:
    now, attempts, times = T0, 0, []
    while True:
        attempts += 1
        plan = plan_after(retry(), recipients=["a@x.org"], attempts=attempts, queued_at=T0, now=now,
                          retry_for=RETRY_FOR, backoff=NO_JITTER)
        if plan.status != "queued":
            break
        assert plan.next_attempt_at is not None
        now = plan.next_attempt_at
        times.append(now - T0)
        assert attempts < 100, "bounded"
    assert plan.status == "bounced"
    assert [r.address for r in plan.expired] == ["a@x.org"] and plan.expired[0].code == 451
    assert times[-1] == RETRY_FOR, "the last attempt is made at the give-up time exactly"
    assert all(b > a for a, b in itertools.pairwise(times))
    assert 30 < attempts < 40  # 5 min doubling to 4 h, then every 4 h for 5 days


def test_an_attempt_made_after_the_deadline_that_fails_bounces_at_once() -> None:
    plan = plan_after(retry(code=None, detail="cannot connect"), recipients=["a@x.org"], attempts=3, queued_at=T0,
                      now=T0 + RETRY_FOR + 3600, retry_for=RETRY_FOR, backoff=NO_JITTER)
    assert plan.status == "bounced" and plan.expired[0].detail == "cannot connect"


def test_sent_is_final_and_5xx_is_final() -> None:
    sent = plan_after(DeliveryOutcome(status="sent", code=250, detail="250 ok"), recipients=["a@x.org", "b@x.org"],
                      attempts=1, queued_at=T0, now=T0, retry_for=RETRY_FOR, backoff=NO_JITTER)
    assert sent.status == "sent" and sent.delivered == ["a@x.org", "b@x.org"] and sent.requeue == []
    failed = plan_after(DeliveryOutcome(status="failed", code=554, detail="554 5.7.1 spam"),
                        recipients=["a@x.org"], attempts=2, queued_at=T0, now=T0, retry_for=RETRY_FOR,
                        backoff=NO_JITTER)
    assert failed.status == "failed" and [(r.address, r.code) for r in failed.rejected] == [("a@x.org", 554)]


def test_recipients_that_come_apart_end_the_job_and_the_rest_is_requeued() -> None:
    outcome = DeliveryOutcome(status="sent", code=250, detail="250 ok", refused=[
        RecipientRefusal(address="gone@x.org", code=550, detail="550 5.1.1 no such user"),
        RecipientRefusal(address="full@x.org", code=452, detail="452 4.2.2 mailbox full")])
    plan = plan_after(outcome, recipients=["a@x.org", "gone@x.org", "full@x.org"], attempts=1, queued_at=T0,
                      now=T0 + 10, retry_for=RETRY_FOR, backoff=NO_JITTER)
    assert plan.status == "sent" and plan.delivered == ["a@x.org"]
    assert [r.address for r in plan.rejected] == ["gone@x.org"]
    assert plan.requeue == ["full@x.org"] and plan.requeue_at == T0 + 10 + 300


def test_nobody_taken_some_refused_for_good_the_others_retried_in_a_new_job() -> None:
    outcome = retry(refused=[RecipientRefusal(address="gone@x.org", code=550, detail="550 5.1.1 no such user")],
                    detail="refused every recipient", code=450)
    plan = plan_after(outcome, recipients=["gone@x.org", "later@x.org"], attempts=1, queued_at=T0, now=T0,
                      retry_for=RETRY_FOR, backoff=NO_JITTER)
    assert plan.status == "failed" and [r.address for r in plan.rejected] == ["gone@x.org"]
    assert plan.requeue == ["later@x.org"] and plan.requeue_at == T0 + 300


def test_the_deadline_caps_the_next_attempt() -> None:
    plan = plan_after(retry(), recipients=["a@x.org"], attempts=20, queued_at=T0, now=T0 + RETRY_FOR - 60,
                      retry_for=RETRY_FOR, backoff=NO_JITTER)
    assert plan.status == "queued" and plan.next_attempt_at == T0 + RETRY_FOR
