"""Receiving one message for one agent: the path both intakes share.

Thread lookup, the gate, then one transaction holding the audit row, the
stored message and its delivery job (and the limit charges). The caller
answers the SMTP client (or Stalwart) only after ``receive`` returned, so a
250 always means "on disk".
"""

from __future__ import annotations

__all__ = ["Received", "Reception"]

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec

from appliance.audit import DecisionRecord, append_decision
from appliance.delivery.jobs import enqueue
from appliance.delivery.payload import EventData, message_data, quarantine_data
from appliance.gate import Decision, Envelope, Facts, evaluate, gather, read_bytes
from appliance.gate.inspection import Inspection
from appliance.gate.replay import RecordedFacts
from appliance.inbound.readers import InlineReader, MessageReader
from appliance.mail import (
    MessageBytes,
    ParsedMessage,
    ReadingLimits,
    Unreadable,
    sniff_message_id,
    split_header,
    trace_fields,
    without_forged_trace,
)
from appliance.mailauth import Resolver
from appliance.outbound.dsn import parse_dsn
from appliance.outbound.queue import bounce_from_dsn
from appliance.policy.book import PolicyBook
from appliance.store.database import Batch, Database, utc
from appliance.store.evidence import Evidence, record_evidence
from appliance.store.limits import PersistentLimits
from appliance.store.messages import INBOX, QUARANTINE, StoredMessage, may_join_thread, resolve_thread, save_message

log = logging.getLogger("appliance.inbound")
T = TypeVar("T")


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of receiving one message: the decision, and what was stored."""

    decision: Decision
    email_id: str | None
    delivery_id: str | None


class Reception:
    """Decides and durably records messages for the configured agents."""

    def __init__(self, *, db: Database, policies: PolicyBook, resolver: Resolver, limits: PersistentLimits,
                 hostname: str, max_message_size: int, max_body_chars: int = 100_000,
                 reader: MessageReader | None = None, reading: ReadingLimits | None = None,
                 refused_raw_days: int = 7) -> None:
        self.db = db
        self.policies = policies
        self.resolver = resolver
        self.limits = limits
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_body_chars = max_body_chars
        self.reading = reading or ReadingLimits()
        self.reader: MessageReader = reader or InlineReader(self.reading)
        """Where messages are parsed and their text extracted (reader processes in a running appliance)."""
        self.awaits_store = False
        """Whether the MTA stores accepted mail after we answer (Stalwart's hook): the agent's
        ``message.received`` then waits (``awaiting``) until ``appliance.stalwart.follower`` sees it stored."""
        self.on_committed: Callable[[Received], None] | None = None
        """Called after each committed decision, whichever intake it came from (wakes the dispatcher)."""
        self.refused_raw_days = refused_raw_days
        """``[retention] refused_raw_days``: 0 keeps no refused message's bytes (for ``policy replay``)."""

    def is_agent(self, address: str) -> bool:
        return self.policies.get(address) is not None

    async def receive(self, envelope: Envelope, raw: bytes, *, agent: str, intake: str,
                      refused: Unreadable | None = None, size: int | None = None) -> Received:
        """Decide ``raw`` for ``agent`` and commit everything the decision implies.

        ``refused``: the intake could not take the message in whole (over SIZE, a line too
        long); it is decided and audited as unreadable, ``size`` saying how big it was.
        """
        started = time.perf_counter()
        now = time.time()
        agent = agent.lower()
        policy = self.policies.get(agent)
        if policy is None:
            raise KeyError(f"{agent} is not an agent of this appliance")
        if refused is not None:
            message, read = None, Inspection(unreadable=refused)
        else:
            message, unreadable = await _off_loop_if_large(
                raw, lambda: read_bytes(raw, max_size=self.max_message_size, limits=self.reading))
            read = (await self.reader.read(message, policy.content_guards) if message is not None
                    else Inspection(unreadable=unreadable))
        parsed = read.parsed
        thread_id = None
        if parsed is not None and may_join_thread(parsed):
            thread_id = await self.db.read(lambda con: resolve_thread(con, agent, parsed, utc(now)))
        facts = await gather(envelope, raw, message, read, agent=agent, resolver=self.resolver, now=now,
                             max_size=self.max_message_size, thread_id=thread_id, size=size)
        decision = evaluate(policy, facts, self.limits)
        readable = facts.readable
        if decision.charge is not None:
            # Counted now, before the first await, so concurrent messages see each other (no
            # overshoot); withdrawn below if the commit fails, so only committed decisions count.
            self.limits.record(decision.charge, now)
        latency_ms = (time.perf_counter() - started) * 1000
        body_hash = None
        if policy.audit_log.include_body_hash:
            body = message.body if message is not None else split_header(raw)[1]
            body_hash = await _off_loop_if_large(body, lambda: hashlib.sha256(body).hexdigest())
        record = _record(decision, envelope, parsed, raw, body_hash, intake=intake, now=now, size=facts.size,
                         latency_ms=latency_ms)
        stored = self._stored_copy(decision, parsed, message, now)
        evidence, refused_raw = self._evidence(decision, facts, stored, raw, now)
        # A delivery report for one of the agent's own sent messages, whatever the gate made of the
        # report itself (the loop guard keeps it from the agent; an unmatched MAILER-DAEMON is refused).
        report = None
        if parsed is not None and message is not None and parsed.content_type == "multipart/report":
            data = message.data
            report = await _off_loop_if_large(data, lambda: parse_dsn(data))

        # Payloads are built here, not in the writer thread, which must only write.
        jobs: list[tuple[str, EventData, str]] = []
        if stored is not None and parsed is not None and readable is not None:
            held = stored.mailbox != INBOX  # a quarantined message's job waits for its release
            status = "held" if held else "awaiting" if self.awaits_store and intake == "hook" else "pending"
            jobs.append(("message.received", message_data(
                decision, parsed, readable, email_id=stored.email_id, received_at=stored.received_at,
                max_body_chars=self.max_body_chars), status))
            if held:
                jobs.append(("message.quarantined", quarantine_data(
                    agent=agent, decision_id=decision.decision_id, email_id=stored.email_id, sender=stored.sender,
                    received_at=stored.received_at, reason=decision.reason), "pending"))

        def commit(batch: Batch) -> str | None:
            append_decision(batch, record)
            record_evidence(batch, evidence, refused_raw)
            if report is not None:
                bounce_from_dsn(batch, report, agent=agent, now=now)
            if decision.charge is not None:
                PersistentLimits.write_charge(batch, decision.charge, now)
            if stored is not None:
                save_message(batch, stored)
            visible = None
            for event_type, data, status in jobs:
                delivery_id = enqueue(batch, agent=agent, event_type=event_type, data=data, email_id=stored.email_id
                                      if stored else None, decision_id=decision.decision_id, now=now, status=status)
                visible = delivery_id if status == "pending" else visible
            return visible

        try:
            delivery_id = await self.db.write_batch(commit)
        except BaseException:
            if decision.charge is not None:
                self.limits.withdraw(decision.charge, now)
            raise
        received = Received(decision=decision, email_id=stored.email_id if stored else None, delivery_id=delivery_id)
        if self.on_committed is not None:
            try:
                self.on_committed(received)
            except Exception:  # the message is committed: a failed notification changes nothing
                log.exception("on_committed callback failed")
        return received

    def _stored_copy(self, decision: Decision, parsed: ParsedMessage | None, message: MessageBytes | None,
                     now: float) -> StoredMessage | None:
        if decision.action not in ("accept", "quarantine") or parsed is None or message is None:
            return None
        header = self.trace_headers(decision)
        raw = without_forged_trace(message, self.hostname)
        return StoredMessage(
            email_id="e" + decision.decision_id[1:],
            agent=decision.agent,
            mailbox=INBOX if decision.action == "accept" else QUARANTINE,
            thread_id=decision.thread_id,
            message_id=parsed.message_id,
            subject=parsed.subject,
            sender=parsed.sender.address,
            received_at=utc(now),
            decision_id=decision.decision_id,
            keywords=[],
            size=len(header) + len(raw),
            raw=header + raw,
        )

    def _evidence(self, decision: Decision, facts: Facts, stored: StoredMessage | None, raw: bytes,
                  now: float) -> tuple[Evidence, bytes | None]:
        """What ``policy replay`` needs to judge this message again without DNS, and the bytes to keep.

        A refused message's bytes are kept when it was read (one refused for what it is is judged
        on that again, bytes or not) and ``refused_raw_days`` allows; a stored one's are in the store.
        """
        recorded = RecordedFacts(envelope=facts.envelope, decided_at=facts.now, thread_id=facts.thread_id,
                                 size=facts.size, max_size=facts.max_size, auth=facts.auth,
                                 unreadable=facts.unreadable)
        evidence = Evidence(decision_id=decision.decision_id, agent=decision.agent, ts=utc(now), facts=recorded,
                            email_id=stored.email_id if stored is not None else None,
                            stored_prefix=len(self.trace_headers(decision)) if stored is not None else None)
        keep = (stored is None and self.refused_raw_days > 0 and facts.message is not None
                and facts.unreadable is None)
        return evidence, raw if keep else None

    def trace_headers(self, decision: Decision) -> bytes:
        """Our Authentication-Results (RFC 8601) and decision header, prepended to the stored copy."""
        a = decision.auth
        return trace_fields(authserv=self.hostname, spf=a.spf, dkim=a.dkim, dmarc=a.dmarc,
                            decision_id=decision.decision_id, action=decision.action, reason=decision.reason)


_LARGE = 256 * 1024
"""Bytes past which reading or hashing a message moves to a thread: the event loop must not wait on it."""


async def _off_loop_if_large(data: bytes, work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work) if len(data) > _LARGE else work()


def _record(decision: Decision, envelope: Envelope, parsed: ParsedMessage | None, raw: bytes,
            body_hash: str | None, *, intake: str, now: float, size: int, latency_ms: float) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision.decision_id,
        ts=utc(now),
        agent=decision.agent,
        client_ip=envelope.client_ip,
        helo=envelope.helo,
        mail_from=envelope.mail_from,
        rcpt_to=list(envelope.rcpt_to),
        header_from=decision.sender,
        message_id=parsed.message_id if parsed else sniff_message_id(raw),
        subject=parsed.subject if parsed else None,
        thread_id=decision.thread_id,
        spf=decision.auth.spf,
        dkim=decision.auth.dkim,
        dmarc=decision.auth.dmarc,
        rule=decision.rule,
        action=decision.action,
        reason=decision.reason,
        capabilities=list(decision.capabilities),
        estimated_tokens=decision.estimated_tokens,
        size=size,
        body_sha256=body_hash,
        latency_ms=round(latency_ms, 3),
        intake=intake,
        detail=decision.detail if decision.action in ("bounce", "tempfail", "drop") else None,
    )
