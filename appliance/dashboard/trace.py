"""A recorded decision's trace, step by step, as ``appliance policy explain`` prints one.

The audit row keeps the verdict (action, reason, the deciding step's ``detail``, the matched rule,
the authentication results, the granted capabilities), not every step's wording. The gate runs
its steps in a fixed order (``appliance.gate.evaluate``: size, parse, sender, verification,
content, loop, rate, budget, decision) and stops at the first that decides, so the row says
which step decided and that every step before it passed. That is what this shows: the steps the
message went through, in order, the deciding one with the row's own detail. Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["deciding_step", "recorded_trace"]

from appliance.gate import reasons
from appliance.gate.decision import TraceStep
from appliance.store.audit import DecisionRow

_ORDER = ("size", "parse", "sender", "verification", "content", "loop", "rate", "budget", "decision")
_STEP_OF_REASON = {
    reasons.MALFORMED_MESSAGE: "parse", reasons.MESSAGE_TOO_COMPLEX: "parse",
    reasons.SENDER_NOT_ALLOWED: "sender",
    reasons.DKIM_REQUIRED: "verification", reasons.SPF_REQUIRED: "verification",
    reasons.DMARC_REQUIRED: "verification", reasons.DNS_TEMPORARY_FAILURE: "verification",
    reasons.LOOP_SUSPECTED: "loop", reasons.RATE_LIMITED: "rate", reasons.TOKEN_BUDGET_EXHAUSTED: "budget",
    reasons.QUARANTINED_BY_RULE: "decision", reasons.DROPPED_BY_RULE: "decision",
}
_OUTCOME = {"sender": "no match", "verification": "fail", "decision": ""}


def deciding_step(row: DecisionRow) -> str:
    """The gate step that decided: the step a reason code belongs to; a content guard's own reason is ``content``."""
    if row.reason is None:
        return "decision"
    if row.reason == reasons.MESSAGE_TOO_LARGE:  # too many bytes (size), or too much text to scan (content)
        return "content" if "readable text" in (row.detail or "") else "size"
    return _STEP_OF_REASON.get(row.reason, "content")


def _passed(step: str, row: DecisionRow) -> TraceStep:
    if step == "parse":
        return TraceStep(step="parse", outcome="pass", detail=f"From <{row.header_from}>" if row.header_from else "")
    if step == "sender":
        if row.rule is None:
            return TraceStep(step="sender", outcome="no match", detail="no rule matches; defaultAction is accept")
        return TraceStep(step="sender", outcome="match", detail=f"senders[{row.rule}]")
    if step == "verification":
        return TraceStep(step="verification", outcome="pass",
                         detail=f"what the rule required held (spf={row.spf or 'none'} dkim={row.dkim or 'none'} "
                                f"dmarc={row.dmarc or 'none'})")
    return TraceStep(step=step, outcome="pass", detail="")


def recorded_trace(row: DecisionRow) -> list[TraceStep]:
    """The steps ``row``'s message went through, in the gate's order, ending with the one that decided.

    A send (``intake`` ``outbound``) is judged by the outbound policy: one step, its verdict.
    """
    if row.intake == "outbound":
        return [TraceStep(step="outbound", outcome=row.action, detail=row.detail or row.reason or "")]
    decider = deciding_step(row)
    trace = [_passed(step, row) for step in _ORDER[1:_ORDER.index(decider)]]
    if decider == "decision":
        caps = ", ".join(row.capabilities or []) or "no capabilities"
        trace.append(TraceStep(step="decision", outcome=row.action, detail=f"granted {caps}"))
        return trace
    outcome = "temperror" if row.action == "tempfail" and decider != "rate" else _OUTCOME.get(decider, "fail")
    trace.append(TraceStep(step=decider, outcome=outcome, detail=row.detail or row.reason or ""))
    trace.append(TraceStep(step="decision", outcome=row.action, detail=row.reason or ""))
    return trace
