"""A recorded decision's trace: the gate's steps up to the one the row's reason belongs to."""

from __future__ import annotations

from datetime import datetime

import pytest

from appliance.dashboard.trace import deciding_step, recorded_trace
from appliance.store.audit import DecisionRow


def row(action: str, reason: str | None, *, rule: int | None = 0, detail: str | None = None,
        intake: str = "smtp") -> DecisionRow:
    return DecisionRow(seq=1, decision_id="d1", ts=datetime(2026, 1, 1), agent="agent@example.test",
                       client_ip="192.0.2.1", helo="h", mail_from="a@example.net", rcpt_to=["agent@example.test"],
                       header_from="a@example.net", message_id="<m@x>", subject="s", thread_id="T1", spf="pass",
                       dkim="none", dmarc="none", rule=rule, action=action, reason=reason, capabilities=["read"],
                       estimated_tokens=3, size=100, body_sha256=None, latency_ms=1.0, intake=intake, detail=detail,
                       token_id=None, row_hash="h")


@pytest.mark.parametrize(("action", "reason", "detail", "steps"), [
    ("accept", None, None, ["parse", "sender", "verification", "content", "loop", "rate", "budget", "decision"]),
    ("quarantine", "quarantined_by_rule", None,
     ["parse", "sender", "verification", "content", "loop", "rate", "budget", "decision"]),
    ("bounce", "malformed_message", "two From fields", ["parse", "decision"]),
    ("bounce", "message_too_large", "30000000 bytes exceeds the limit", ["size", "decision"]),
    ("bounce", "message_too_large", "readable text exceeds 100 characters",
     ["parse", "sender", "verification", "content", "decision"]),
    ("bounce", "dkim_required", "no DKIM signature", ["parse", "sender", "verification", "decision"]),
    ("tempfail", "dns_temporary_failure", "SPF lookup failed", ["parse", "sender", "verification", "decision"]),
    ("bounce", "prompt_injection_suspected", "contentGuards[0] matched",
     ["parse", "sender", "verification", "content", "decision"]),
    ("drop", "loop_suspected", "Auto-Submitted: auto-replied",
     ["parse", "sender", "verification", "content", "loop", "decision"]),
    ("tempfail", "rate_limited", "3 messages", ["parse", "sender", "verification", "content", "loop", "rate",
                                                "decision"]),
    ("bounce", "token_budget_exhausted", "perThread 10", ["parse", "sender", "verification", "content", "loop",
                                                          "rate", "budget", "decision"]),
])
def test_the_trace_stops_at_the_deciding_step_with_the_rows_detail(action: str, reason: str | None,
                                                                    detail: str | None, steps: list[str]) -> None:
    trace = recorded_trace(row(action, reason, detail=detail))
    assert [t.step for t in trace] == steps
    assert trace[-1].outcome == action
    decider = deciding_step(row(action, reason, detail=detail))
    if decider != "decision":
        deciding = trace[-2]
        assert deciding.step == decider and deciding.detail == detail
        assert deciding.outcome == ("temperror" if action == "tempfail" and decider != "rate" else "fail")
    assert all(t.outcome in ("pass", "match") for t in trace[:-2])


def test_a_sender_no_rule_matches_is_refused_at_the_sender_step() -> None:
    trace = recorded_trace(row("bounce", "sender_not_allowed", rule=None,
                               detail="no rule matches z@x.example; defaultAction is bounce"))
    assert [(t.step, t.outcome) for t in trace] == [("parse", "pass"), ("sender", "no match"), ("decision", "bounce")]
    assert "defaultAction is bounce" in trace[1].detail


def test_a_send_is_one_outbound_step() -> None:
    trace = recorded_trace(row("bounce", "recipient_not_allowed", detail="x@y not allowed", intake="outbound"))
    assert [(t.step, t.outcome, t.detail) for t in trace] == [("outbound", "bounce", "x@y not allowed")]
