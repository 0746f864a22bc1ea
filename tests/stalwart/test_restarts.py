"""The restart policy: what each health probe means, and how long to wait before a restart."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.stalwart.restarts import Health, Keep, Probe, Restart, RestartPolicy, judge, restart_delay, restarted

POLICY = RestartPolicy(health_failures=3, ready_timeout=60.0, backoff=1.0, backoff_max=30.0, stable_after=30.0)


def ready_at(t: float, started: float = 0.0) -> Health:
    """A Stalwart started at ``started`` and ready since ``t``."""
    return Health(started_at=started, ready_since=t, ever_ready=True)


def keep(verdict: Keep | Restart) -> Keep:
    assert isinstance(verdict, Keep), verdict
    return verdict


def restart(verdict: Keep | Restart) -> Restart:
    assert isinstance(verdict, Restart), verdict
    return verdict


def test_a_ready_probe_is_ready_and_clears_the_failures() -> None:
    verdict = keep(judge(POLICY, Health(started_at=0, failures=2), "ready", 5.0))
    assert verdict.status == "ready"
    assert verdict.health.failures == 0 and verdict.health.ready_since == 5.0 and verdict.health.ever_ready


def test_ready_keeps_the_time_it_became_ready() -> None:
    verdict = keep(judge(POLICY, ready_at(5.0), "ready", 9.0))
    assert verdict.health.ready_since == 5.0


def test_up_but_not_ready_is_starting_within_the_ready_timeout() -> None:
    verdict = keep(judge(POLICY, Health(started_at=100.0), "live", 100.0 + 59.0, "ready answered 503"))
    assert verdict.status == "starting" and verdict.health.failures == 0


def test_up_but_not_ready_past_the_ready_timeout_is_a_failure_naming_the_timeout() -> None:
    verdict = keep(judge(POLICY, Health(started_at=100.0), "live", 100.0 + 61.0, "ready answered 503"))
    assert verdict.status == "unhealthy" and verdict.health.failures == 1
    assert verdict.problem == "not ready 60 s after the start (ready answered 503)"


def test_not_ready_after_having_been_ready_is_a_failure_at_once() -> None:
    verdict = keep(judge(POLICY, ready_at(1.0), "live", 2.0, "ready answered 503"))
    assert verdict.status == "unhealthy" and verdict.health.failures == 1
    assert verdict.health.ready_since is None
    assert verdict.problem == "up but not ready (ready answered 503)"


@pytest.mark.parametrize("probe", ["failing", "unanswered", "live"])
def test_the_configured_number_of_failures_in_a_row_calls_for_a_restart(probe: Probe) -> None:
    health = ready_at(0.0)
    for n in (1, 2):
        verdict = keep(judge(POLICY, health, probe, float(n)))
        assert verdict.status == "unhealthy" and verdict.health.failures == n
        health = verdict.health
    decided = restart(judge(POLICY, health, probe, 3.0, "detail"))
    assert decided.delay == POLICY.backoff
    assert decided.reason.endswith("(detail), 3 probe(s) in a row")


def test_a_ready_probe_between_failures_starts_the_count_again() -> None:
    health = keep(judge(POLICY, ready_at(0.0), "unanswered", 1.0)).health
    health = keep(judge(POLICY, health, "unanswered", 2.0)).health
    health = keep(judge(POLICY, health, "ready", 3.0)).health
    verdict = keep(judge(POLICY, health, "unanswered", 4.0))
    assert verdict.health.failures == 1


def test_an_exit_calls_for_a_restart_at_the_first_probe() -> None:
    decided = restart(judge(POLICY, ready_at(0.0), "exited", 1.0, "exit code 137"))
    assert decided.reason == "exited (exit code 137)"
    assert decided.delay == 1.0


def test_an_exit_while_starting_also_restarts() -> None:
    assert isinstance(judge(POLICY, Health(started_at=0.0), "exited", 0.5), Restart)


def test_a_hang_counts_like_an_error_status() -> None:
    verdict = keep(judge(POLICY, ready_at(0.0), "unanswered", 1.0, "no answer within 2 s"))
    assert verdict.problem == "no answer to the health check (no answer within 2 s)"
    assert verdict.health.failures == 1


def test_each_restart_that_did_not_stay_up_doubles_the_wait() -> None:
    health = ready_at(0.0)
    delays = []
    now = 0.0
    for _ in range(4):
        decided = restart(judge(POLICY, health, "exited", now))
        delays.append(decided.delay)
        health = restarted(decided.health, now)
        now += 1.0
        health = keep(judge(POLICY, health, "ready", now)).health  # ready, but briefly
        now += 1.0
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_the_wait_is_capped() -> None:
    assert restart_delay(POLICY, 4) == 16.0
    assert restart_delay(POLICY, 5) == 30.0
    assert restart_delay(POLICY, 10_000) == 30.0  # no float overflow on a very long run of restarts


def test_ready_for_the_stable_period_resets_the_backoff() -> None:
    health = Health(started_at=100.0, unstable_restarts=3)
    health = keep(judge(POLICY, health, "ready", 101.0)).health
    assert health.unstable_restarts == 3  # ready, not yet for long
    health = keep(judge(POLICY, health, "ready", 101.0 + 30.0)).health
    assert health.unstable_restarts == 0
    assert restart(judge(POLICY, health, "exited", 140.0)).delay == POLICY.backoff


def test_a_break_in_readiness_restarts_the_stable_period() -> None:
    health = Health(started_at=0.0, unstable_restarts=2)
    health = keep(judge(POLICY, health, "ready", 1.0)).health
    health = keep(judge(POLICY, health, "failing", 20.0)).health
    health = keep(judge(POLICY, health, "ready", 21.0)).health
    health = keep(judge(POLICY, health, "ready", 40.0)).health  # 39 s since the first ready, 19 since the break
    assert health.unstable_restarts == 2


def test_restarted_starts_afresh_and_counts_an_unstable_restart() -> None:
    before = Health(started_at=0.0, failures=3, ready_since=None, ever_ready=True, unstable_restarts=1)
    after = restarted(before, 50.0)
    assert after == Health(started_at=50.0, unstable_restarts=2)


def test_a_requested_restart_does_not_count_against_the_backoff() -> None:
    before = Health(started_at=0.0, ready_since=1.0, ever_ready=True, unstable_restarts=1)
    assert restarted(before, 50.0, requested=True) == Health(started_at=50.0, unstable_restarts=1)


def test_after_a_restart_not_ready_is_starting_again() -> None:
    health = restarted(ready_at(0.0), 100.0)
    assert keep(judge(POLICY, health, "live", 101.0)).status == "starting"


_PROBES: list[Probe] = ["ready", "live", "failing", "unanswered", "exited"]


@given(st.lists(st.sampled_from(_PROBES), max_size=60), st.floats(min_value=0.01, max_value=10))
def test_any_run_of_probes_never_waits_outside_the_bounds_nor_keeps_counting_past_the_limit(
        probes: list[Probe], step: float) -> None:
    health = Health(started_at=0.0)
    now = 0.0
    for probe in probes:
        now += step
        verdict = judge(POLICY, health, probe, now)
        if isinstance(verdict, Restart):
            assert POLICY.backoff <= verdict.delay <= POLICY.backoff_max
            health = restarted(verdict.health, now)
        else:
            assert verdict.health.failures < POLICY.health_failures
            assert (verdict.status == "ready") == (probe == "ready")
            health = verdict.health
