"""What the gate decides, and the facts it decides on."""

from __future__ import annotations

__all__ = ["AuthSummary", "Decision", "Envelope", "LimitCharge", "TraceStep"]

import msgspec

from appliance.guards import GuardHit
from appliance.policy import Action


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """The SMTP transaction around a message."""

    client_ip: str
    helo: str
    mail_from: str
    """MAIL FROM's address; empty for the null sender ``<>``."""
    rcpt_to: list[str]


class TraceStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of the evaluation: what it found and why."""

    step: str
    outcome: str
    detail: str


class AuthSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One RFC 8601 result word per mechanism."""

    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"


class LimitCharge(msgspec.Struct, frozen=True, kw_only=True):
    """What to count against the limits once the decision is committed."""

    rate_keys: list[str]
    token_keys: list[str]
    tokens: int


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The gate's verdict on one message for one agent."""

    decision_id: str
    agent: str
    action: Action
    reason: str | None
    capabilities: list[str]
    rule: int | None
    """0-based index of the matched entry in ``senders``; None when none matched."""
    auth: AuthSummary
    trace: list[TraceStep]
    sender: str | None
    """The From address; None for a message too malformed to have one."""
    thread_id: str
    estimated_tokens: int
    budget_remaining: int | None
    """Tokens left in the tightest budget that applies; None when no budget applies."""
    charge: LimitCharge | None
    guard: GuardHit | None = None

    @property
    def detail(self) -> str:
        """What the deciding step found (the last step of the trace), e.g. why a message is malformed."""
        return self.trace[-1].detail if self.trace else ""

    @property
    def dispatched(self) -> bool:
        """True when the agent is to receive the message."""
        return self.action == "accept"
