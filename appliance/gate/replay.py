"""Replaying recorded decisions under another policy: what would change, and which step decides it.

Pure: the history arrives as ``RecordedDecision`` values (the facts the gate
had when it decided, and the message's bytes when they are still kept), each
is judged again by the same ``evaluate``, and the result is a ``ReplayReport``.
Nothing is asked of DNS: authentication is taken as it was verified then, so
a replay of the same history under the same policy always says the same.
Rate limits and token budgets are simulated by a fresh ``InMemoryLimits``
fed in the order given (the history's order), from the first decision replayed:
usage before it, and usage agents reported, are not counted.
"""

from __future__ import annotations

__all__ = [
    "BytesState",
    "Flip",
    "NotReplayable",
    "RecordedDecision",
    "RecordedFacts",
    "Replay",
    "ReplayReport",
    "Transition",
    "replay",
]

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from appliance.gate.assess import read_bytes
from appliance.gate.decision import Decision, Envelope, TraceStep
from appliance.gate.evaluate import Facts, evaluate
from appliance.gate.inspection import Inspection, inspect_message
from appliance.gate.limits import InMemoryLimits
from appliance.mail import MessageBytes, ReadingLimits, Unreadable
from appliance.mailauth.results import AuthResults
from appliance.policy import MailPolicy

BytesState = Literal["kept", "not_kept", "deleted"]
"""Whether a decision's message bytes are still at hand: ``not_kept`` (a refused message past
``[retention] refused_raw_days``, or that setting was 0), ``deleted`` (gone from the store)."""

FlipKind = Literal["now_refused", "now_accepted", "changed"]
"""``now_refused``: was accepted (dispatched to the agent), is not now; ``now_accepted``: the reverse;
``changed``: another action either way (a bounce now a tempfail, an accept now a quarantine is
``now_refused`` since the agent no longer gets it)."""


class RecordedFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate knew of a message when it decided, beyond its bytes: enough to rebuild ``Facts``."""

    envelope: Envelope
    decided_at: float
    """``Facts.now``: Unix seconds."""
    thread_id: str
    size: int
    max_size: int | None
    auth: AuthResults | None
    """Authentication as verified then (None when the message was not read far enough to verify)."""
    unreadable: Unreadable | None
    """Why the message could not be read, when it could not: it is judged on that again, bytes or not."""


class RecordedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One decision of the history, as the audit row, the recorded facts and the store hold it."""

    decision_id: str
    agent: str
    ts: datetime
    sender: str | None
    subject: str | None
    action: str
    reason: str | None
    facts: RecordedFacts | None
    """None for a decision made before facts were recorded."""
    raw: bytes | None
    """The message as received (our trace fields left out), None when not at hand (``bytes_state``)."""
    bytes_state: BytesState = "kept"


class Transition(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """How many replayed decisions went from one action to another (the same one included)."""

    old_action: str
    new_action: str
    count: int


class Flip(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A message whose action the new policy changes, with the step that decides it now."""

    decision_id: str
    ts: datetime
    sender: str | None
    subject: str | None
    kind: FlipKind
    old_action: str
    old_reason: str | None
    new_action: str
    new_reason: str | None
    step: TraceStep
    """The deciding step of the new evaluation (the last of its trace)."""
    trace: list[TraceStep]


class NotReplayable(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A decision that could not be judged again, and why (``reason``: a stable code)."""

    decision_id: str
    ts: datetime
    sender: str | None
    subject: str | None
    action: str
    reason: Literal["no_facts_recorded", "raw_not_kept", "message_deleted"]
    detail: str


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a policy would have changed over a history: the ``--json`` contract of ``policy replay``."""

    agent: str
    since: datetime
    decisions: int
    """Inbound decisions in the history: ``replayed`` plus ``len(not_replayable)``."""
    replayed: int
    unchanged: int
    """Replayed with the same action (the reason may differ)."""
    transitions: list[Transition]
    """Old action to new action, every pair seen, most frequent first."""
    flips: list[Flip]
    """Every replayed decision whose action changes, in history order."""
    not_replayable: list[NotReplayable]


_WHY: dict[BytesState, tuple[Literal["raw_not_kept", "message_deleted"], str]] = {
    "not_kept": ("raw_not_kept", "the refused message's bytes are no longer kept ([retention] refused_raw_days)"),
    "deleted": ("message_deleted", "the message was deleted from the store"),
}


class Replay:
    """A replay in progress: feed it the history in order (``add``), then read the ``report``.

    Incremental, so an adapter can page through a long history without holding its bytes at once.
    """

    def __init__(self, policy: MailPolicy, *, agent: str, since: datetime,
                 reading: ReadingLimits | None = None) -> None:
        self.policy = policy
        self.agent = agent.lower()
        self.since = since
        self.reading = reading or ReadingLimits()
        self.limits = InMemoryLimits()
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.flips: list[Flip] = []
        self.not_replayable: list[NotReplayable] = []

    def add(self, recorded: RecordedDecision) -> Decision | None:
        """Judge one decision again; return the new decision, None when it cannot be replayed."""
        facts = self._facts(recorded)
        if facts is None:
            return None
        decision = evaluate(self.policy, facts, self.limits)
        if decision.charge is not None:  # as the intake counts a committed decision
            self.limits.record(decision.charge, facts.now)
        old, new = recorded.action, decision.action
        self.transitions[(old, new)] += 1
        if old != new:
            kind: FlipKind = ("now_refused" if old == "accept" else "now_accepted" if new == "accept"
                              else "changed")
            last = decision.trace[-1] if decision.trace else TraceStep(step="decision", outcome=new, detail="")
            self.flips.append(Flip(
                decision_id=recorded.decision_id, ts=recorded.ts, sender=recorded.sender, subject=recorded.subject,
                kind=kind, old_action=old, old_reason=recorded.reason, new_action=new, new_reason=decision.reason,
                step=last, trace=list(decision.trace)))
        return decision

    def _facts(self, recorded: RecordedDecision) -> Facts | None:
        recorded_facts = recorded.facts
        if recorded_facts is None:
            self._skip(recorded, "no_facts_recorded",
                       "decided before the appliance recorded decision-time facts, or they were removed")
            return None
        # A message refused for what it is (unreadable, too large) is judged on that again: no bytes needed.
        unread = recorded_facts.unreadable
        oversize = recorded_facts.max_size is not None and recorded_facts.size > recorded_facts.max_size
        if unread is not None or oversize:
            return self._rebuild(recorded, recorded_facts, Inspection(unreadable=unread), message=None)
        if recorded.raw is None:
            code, detail = _WHY.get(recorded.bytes_state, _WHY["not_kept"])
            self._skip(recorded, code, detail)
            return None
        # Read as the intake read it; the new policy's guards are run by evaluate itself (guards_scanned False).
        message, unreadable = read_bytes(recorded.raw, limits=self.reading)
        read = inspect_message(message, self.reading) if message is not None else Inspection(unreadable=unreadable)
        return self._rebuild(recorded, recorded_facts, read, message=message)

    def _rebuild(self, recorded: RecordedDecision, f: RecordedFacts, read: Inspection, *,
                 message: MessageBytes | None) -> Facts:
        return Facts(
            decision_id=recorded.decision_id, agent=recorded.agent.lower(), envelope=f.envelope, size=f.size,
            max_size=f.max_size, message=message,
            parsed=read.parsed, unreadable=read.unreadable, readable=read.readable, auth=f.auth,
            thread_id=f.thread_id, now=f.decided_at)

    def _skip(self, recorded: RecordedDecision, reason: Literal["no_facts_recorded", "raw_not_kept",
                                                                 "message_deleted"], detail: str) -> None:
        self.not_replayable.append(NotReplayable(
            decision_id=recorded.decision_id, ts=recorded.ts, sender=recorded.sender, subject=recorded.subject,
            action=recorded.action, reason=reason, detail=detail))

    def report(self) -> ReplayReport:
        """Everything added so far, summed up."""
        replayed = sum(self.transitions.values())
        pairs = sorted(self.transitions.items(), key=lambda item: (-item[1], item[0]))
        return ReplayReport(
            agent=self.agent, since=self.since, decisions=replayed + len(self.not_replayable), replayed=replayed,
            unchanged=sum(n for (old, new), n in self.transitions.items() if old == new),
            transitions=[Transition(old_action=old, new_action=new, count=n) for (old, new), n in pairs],
            flips=list(self.flips), not_replayable=list(self.not_replayable))


def replay(policy: MailPolicy, history: Iterable[RecordedDecision], *, agent: str, since: datetime,
           reading: ReadingLimits | None = None) -> ReplayReport:
    """Judge ``history`` (oldest first) again under ``policy``; see ``Replay``."""
    run = Replay(policy, agent=agent, since=since, reading=reading)
    for recorded in history:
        run.add(recorded)
    return run.report()
