"""The policy gate: what may reach an agent, and what it may then do."""

from appliance.gate import reasons
from appliance.gate.assess import assess, gather, new_decision_id, read_bytes
from appliance.gate.decision import AuthSummary, Decision, Envelope, LimitCharge, TraceStep
from appliance.gate.evaluate import Facts, evaluate
from appliance.gate.limits import InMemoryLimits, LimitCounter

__all__ = [
    "AuthSummary",
    "Decision",
    "Envelope",
    "Facts",
    "InMemoryLimits",
    "LimitCharge",
    "LimitCounter",
    "TraceStep",
    "assess",
    "evaluate",
    "gather",
    "new_decision_id",
    "read_bytes",
    "reasons",
]
