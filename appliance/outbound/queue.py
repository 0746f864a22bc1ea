"""The durable send queue: written with the Sent copy, in the caller's transaction (same durability).

Tables (``appliance.store.outbound``):

- ``outbound_messages``: the signed bytes, once per message, with what links
  DSNs and events back to it. The bytes are the queue's own copy, not a
  reference to the Sent copy in ``messages``: the agent may move or delete
  its Sent copy while the queue still needs the exact bytes that were signed,
  a message to several domains is stored once, and the store keeps its table
  to itself. ``raw`` is set to NULL once every job of the message has ended
  (``release_bytes``, which the worker runs when it is idle; the Sent copy
  stays the record).
- ``outbound_jobs``: one per recipient domain (one SMTP transaction each).
  ``status``: ``queued`` (due at ``next_attempt_at``; a job in flight stays
  ``queued`` until its outcome is committed, so a crash means it is simply
  tried again), ``sent`` (a peer answered 250 to DATA), ``failed`` (5xx:
  final), ``bounced`` (temporary failures for ``retry_for``). A job whose
  recipients came apart (the peer took some, asked to try others later)
  ends, and a new job carries the rest, with the same ``queued_at``.
- ``outbound_attempts``: every attempt, with the transport's report.

Each end is written with its ``message.sent`` / ``message.bounced`` event for
the agent (``appliance.delivery.jobs``) and its audit event (``events``), in
one transaction.
"""

from __future__ import annotations

__all__ = [
    "BOUNCED",
    "FAILED",
    "QUEUED",
    "SENT",
    "QueuedJob",
    "bounce_from_dsn",
    "claim_due",
    "enqueue",
    "link_bounce",
    "new_job_id",
    "next_due",
    "recipient_domains",
    "record_attempt",
    "release_bytes",
]

import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb

from appliance.audit import record_event
from appliance.delivery import jobs
from appliance.mail import ascii_domain
from appliance.outbound.dsn import DsnRecipient, DsnReport
from appliance.outbound.events import BouncedRecipient, BounceReason, MessageBouncedData, MessageSentData
from appliance.outbound.model import DeliveryOutcome, OutboundMessage, RecipientRefusal
from appliance.outbound.retry import Plan
from appliance.store import outbound as store
from appliance.store.database import Batch, utc
from appliance.store.messages import SENT as SENT_MAILBOX
from appliance.store.messages import latest_with_message_id, thread_of_message
from appliance.store.outbound import QueuedJob

QUEUED, SENT, FAILED, BOUNCED = "queued", "sent", "failed", "bounced"

_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def new_job_id() -> str:
    """A queue job's id: time-ordered, unique."""
    return f"j{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def recipient_domains(recipients: Sequence[str]) -> dict[str, list[str]]:
    """Recipients by domain (A-labels, lowercase), each address once, in the order given."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address in recipients:
        local, at, domain = address.strip().rpartition("@")
        if not at or not local or not domain:
            raise ValueError(f"recipient {address!r} is not local@domain")
        domain = ascii_domain(domain)
        full = f"{local}@{domain}"
        if full.lower() not in seen:
            seen.add(full.lower())
            groups.setdefault(domain, []).append(full)
    return groups


def enqueue(tx: Batch | duckdb.DuckDBPyConnection, message: OutboundMessage, *, now: float) -> list[str]:
    """Queue ``message`` inside the caller's transaction (or open batch): its bytes and one job per domain.

    Returns the job ids. The caller stores the Sent copy and the audit row in the same
    transaction, so all of it is on disk before the API answers 202.
    """
    groups = recipient_domains(message.recipients)
    if not groups:
        raise ValueError(f"message {message.email_id} has no recipient")
    batch = tx if isinstance(tx, Batch) else Batch(tx, {})
    store.add_queued_message(batch, message, queued_at=utc(now))
    ids = []
    for domain, recipients in groups.items():
        job_id = new_job_id()
        store.add_job(batch, job_id=job_id, email_id=message.email_id, agent=message.agent, domain=domain,
                      recipients=recipients, status=QUEUED, attempts=0, queued_at=now, next_attempt_at=now)
        ids.append(job_id)
    if tx is not batch:
        batch.flush()
    return ids


def claim_due(con: duckdb.DuckDBPyConnection, *, now: float, exclude: Sequence[str], limit: int) -> list[QueuedJob]:
    """Up to ``limit`` jobs due at ``now``, oldest due first, none of ``exclude`` (those in flight)."""
    return store.claim_due_jobs(con, now=now, exclude=exclude, limit=limit)


def next_due(con: duckdb.DuckDBPyConnection, *, after: float) -> float | None:
    """When the next queued job falls due after ``after`` (None: nothing waits)."""
    return store.next_attempt_after(con, after=after)


def record_attempt(batch: Batch, job: QueuedJob, outcome: DeliveryOutcome, plan: Plan, *, now: float,
                   latency_ms: float | None = None) -> None:
    """Write one attempt and what ``plan`` makes of it: the job's state, a follow-up job, events, audit."""
    attempt = job.attempts + 1
    store.add_attempt(batch, job_id=job.job_id, attempt=attempt, ts=utc(now), status=outcome.status,
                      code=outcome.code, detail=outcome.detail[:2000], peer=outcome.peer, latency_ms=latency_ms)
    con = batch.con
    if plan.status == QUEUED:
        store.reschedule_job(con, job_id=job.job_id, attempts=attempt, next_attempt_at=plan.next_attempt_at,
                             code=outcome.code, detail=outcome.detail[:2000], peer=outcome.peer)
        return
    changed = store.finish_job(con, job_id=job.job_id, status=plan.status, attempts=attempt, code=outcome.code,
                               detail=outcome.detail[:2000], peer=outcome.peer, finished_at=now)
    if not changed:  # ended meanwhile by someone else (an operator): the attempt is history, the state theirs
        return
    if plan.requeue:
        store.add_job(batch, job_id=new_job_id(), email_id=job.email_id, agent=job.agent, domain=job.domain,
                      recipients=plan.requeue, status=QUEUED, attempts=attempt, queued_at=job.queued_at,
                      next_attempt_at=plan.requeue_at if plan.requeue_at is not None else now)
    if plan.delivered:
        _sent(batch, job, outcome, plan.delivered, attempt, now)
    if plan.rejected:
        _bounced(batch, job, "rejected", plan.rejected, attempt, now)
    if plan.expired:
        _bounced(batch, job, "expired", plan.expired, attempt, now)


def release_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """Drop the queue's copy of the bytes of every message no job waits for any more; return how many.

    Not part of recording an outcome: the commit that records a 250 stays as small as it can be.
    """
    return store.drop_ended_bytes(con)


def _aware(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _event(batch: Batch, agent: str, event_type: str, data: MessageSentData | MessageBouncedData, email_id: str,
           now: float) -> None:
    # The event Structs are registered in appliance.delivery.payload's type maps, which render them.
    jobs.enqueue(batch, agent=agent, event_type=event_type, data=data, email_id=email_id,
                 decision_id=None, now=now)


def _sent(batch: Batch, job: QueuedJob, outcome: DeliveryOutcome, delivered: list[str], attempt: int,
          now: float) -> None:
    _event(batch, job.agent, "message.sent", MessageSentData(
        agent=job.agent, email_id=job.email_id, message_id=job.message_id, thread_id=job.thread_id,
        recipients=delivered, peer=outcome.peer, reply=outcome.detail[:1000], attempts=attempt, sent_at=_aware(now),
        job_id=job.job_id), job.email_id, now)
    record_event(batch.con, "outbound.sent", job.agent,
                 f"{job.email_id} {job.message_id} to {', '.join(delivered)} via {outcome.peer}: "
                 f"{outcome.detail[:500]} (attempt {attempt}, job {job.job_id})")


def _bounced(batch: Batch, job: QueuedJob, reason: BounceReason, refusals: list[RecipientRefusal], attempt: int,
             now: float) -> None:
    recipients = [BouncedRecipient(address=r.address, code=r.code, status=_status(r.detail), detail=r.detail[:1000])
                  for r in refusals]
    _event(batch, job.agent, "message.bounced", MessageBouncedData(
        agent=job.agent, email_id=job.email_id, message_id=job.message_id, thread_id=job.thread_id, reason=reason,
        recipients=recipients, attempts=attempt, bounced_at=_aware(now), job_id=job.job_id), job.email_id, now)
    kind = "outbound.failed" if reason == "rejected" else "outbound.bounced"
    why = "refused" if reason == "rejected" else "still failing when retry_for ran out"
    record_event(batch.con, kind, job.agent,
                 f"{job.email_id} {job.message_id} {why} for "
                 + "; ".join(f"{r.address}: {r.detail[:300]}" for r in refusals)
                 + f" (attempt {attempt}, job {job.job_id})")


def _status(detail: str) -> str | None:
    found = _ENHANCED.search(detail)
    return found.group(1) if found else None


# -- DSNs for our own mail --------------------------------------------------------------------------------------


def link_bounce(con: duckdb.DuckDBPyConnection, report: DsnReport, *, agent: str | None = None) -> str | None:
    """The email id of the sent message ``report`` is about, or None when it is none of ours.

    By the ``Original-Envelope-Id`` (the ENVID we gave: our email id) first, then by the
    returned ``Message-ID`` among the Sent copies. With ``agent``, only that agent's
    messages count: a DSN sent to one agent says nothing about another's mail.
    """
    owner = agent.lower() if agent else None
    if report.envelope_id:
        found = store.queued_email_id(con, report.envelope_id, agent=owner)
        if found is not None:
            return found
    if report.message_id:
        found = latest_with_message_id(con, SENT_MAILBOX, report.message_id, agent=owner)
        if found is None:  # the Sent copy was deleted: the queue still knows the message
            found = store.latest_queued_by_message_id(con, report.message_id, agent=owner)
        if found is not None:
            return found
    return None


def bounce_from_dsn(tx: Batch | duckdb.DuckDBPyConnection, report: DsnReport, *, agent: str,
                    now: float) -> str | None:
    """A DSN that came back to ``agent`` for one of its sent messages: raise ``message.bounced`` (reason ``dsn``).

    Only the report's ``failed`` recipients count (a ``delayed`` report changes nothing), and of
    those only recipients of the message (by ``Original-Recipient``, which our ORCPT makes peers
    keep, or ``Final-Recipient``). Returns the email id it was linked to, or None (not ours, or
    nothing of ours failed): nothing is written then.
    """
    if not report.failed:
        return None
    batch = tx if isinstance(tx, Batch) else Batch(tx, {})
    email_id = link_bounce(batch.con, report, agent=agent)
    if email_id is None:
        return None
    # Only what the message was sent to counts: a report naming others (forged, or about a copy forwarded
    # elsewhere without ORCPT) says nothing about this message's recipients.
    ours = {a.lower(): a for a in store.job_recipients(batch.con, email_id)}
    failed: list[tuple[str, DsnRecipient]] = []
    for r in report.failed:
        named = [a for a in (r.original_recipient, r.final_recipient) if a]
        address = next((ours[a.lower()] for a in named if a.lower() in ours), None if ours else r.final_recipient)
        if address is not None:
            failed.append((address, r))
    if not failed:
        return None
    row = store.queued_thread(batch.con, email_id) or thread_of_message(batch.con, email_id)
    thread_id, message_id = (row.thread_id, row.message_id or "") if row else ("", report.message_id or "")
    recipients = [BouncedRecipient(address=address, code=r.code, status=r.status or None,
                                   detail=(r.diagnostic or f"{r.action} {r.status}".strip())[:1000])
                  for address, r in failed]
    agent = agent.lower()
    _event(batch, agent, "message.bounced", MessageBouncedData(
        agent=agent, email_id=email_id, message_id=message_id, thread_id=thread_id, reason="dsn",
        recipients=recipients, attempts=0, bounced_at=_aware(now)), email_id, now)
    record_event(batch.con, "outbound.dsn", agent,
                 f"{email_id} {message_id} bounced by {report.reporting_mta or 'a DSN'} for "
                 + "; ".join(f"{r.address}: {r.status or ''} {r.detail[:300]}".strip() for r in recipients))
    if tx is not batch:
        batch.flush()
    return email_id
