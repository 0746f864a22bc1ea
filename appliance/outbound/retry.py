"""What one delivery attempt means for its job: sent, tried again later, or given up (pure, no I/O).

RFC 5321 4.5.4.1: a message that could not be delivered for a temporary
reason (a 4xx reply, no connection) is retried "until the message is
transmitted or the sender gives up; the give-up time generally needs to be
at least 4-5 days" (``[outbound] retry_for``, 5 days). The retry interval
there "SHOULD be at least 30 minutes" while allowing "more sophisticated and
variable strategies": the first retries here come sooner (5 and 10 minutes:
greylisting, RFC 6647, asks for a retry after a few minutes) and the interval
then doubles up to a few hours, with jitter so that a queue that built up
during an outage does not hit the peer in waves. The last attempt is made
right at the give-up time; a temporary failure then is a bounce.

A 5xx reply is final (RFC 5321 4.2.1): that recipient (or the whole message)
failed, and is never retried.
"""

from __future__ import annotations

__all__ = ["Backoff", "Plan", "plan_after"]

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from appliance.outbound.model import DeliveryOutcome, RecipientRefusal

JobStatus = Literal["queued", "sent", "failed", "bounced"]


@dataclass(frozen=True)
class Backoff:
    """Seconds between attempts: ``first``, then multiplied by ``factor`` up to ``cap``, each with jitter."""

    first: float = 300.0
    factor: float = 2.0
    cap: float = 14_400.0
    jitter: float = 0.2
    """Each delay is stretched or shrunk by up to this fraction."""
    rng: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` (at least 1) attempts that failed temporarily."""
        exponent = max(failed_attempts - 1, 0)
        base = self.cap if exponent > 64 else min(self.first * self.factor ** exponent, self.cap)
        return max(base * (1 + self.jitter * (2 * self.rng() - 1)), 0.0)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What to write after an attempt: the job's new state, and who ended how."""

    status: JobStatus
    """The job's status: ``queued`` (tried again at ``next_attempt_at``, same recipients) or an end."""
    next_attempt_at: float | None = None
    delivered: list[str] = msgspec.field(default_factory=list)
    """Recipients the peer took (its 250 to DATA covers them): ``message.sent``."""
    rejected: list[RecipientRefusal] = msgspec.field(default_factory=list)
    """Recipients refused for good (5xx): ``message.bounced``, reason ``rejected``."""
    expired: list[RecipientRefusal] = msgspec.field(default_factory=list)
    """Recipients still failing temporarily when ``retry_for`` ran out: ``message.bounced``, reason ``expired``."""
    requeue: list[str] = msgspec.field(default_factory=list)
    """Recipients to try again in a new job (at ``requeue_at``): this job ended for the others."""
    requeue_at: float | None = None


def plan_after(outcome: DeliveryOutcome, *, recipients: list[str], attempts: int, queued_at: float, now: float,
               retry_for: float, backoff: Backoff) -> Plan:
    """The plan after attempt number ``attempts`` (1 for the first) of a job for ``recipients``.

    ``queued_at`` is when the message was queued: temporary failures are retried until
    ``queued_at + retry_for``, the last attempt at that moment exactly.
    """
    refused = {r.address: r for r in outcome.refused if r.address in recipients}
    if outcome.status == "failed":  # the whole transaction was refused (5xx to MAIL or DATA): everyone left
        final = [refused.get(a) or RecipientRefusal(address=a, code=outcome.code, detail=outcome.detail)
                 for a in recipients]
        return Plan(status="failed", rejected=[r if _final(r) else _as_final(r, outcome) for r in final])
    rejected = [r for r in refused.values() if _final(r)]
    if outcome.status == "sent":
        delivered = [a for a in recipients if a not in refused]
        temporary = [refused[a] for a in recipients if a in refused and not _final(refused[a])]
    else:  # retry: nobody took it; those not refused one by one share the transaction's temporary failure
        delivered = []
        temporary = [refused.get(a) or RecipientRefusal(address=a, code=outcome.code, detail=outcome.detail)
                     for a in recipients if not (a in refused and _final(refused[a]))]
    deadline = queued_at + retry_for
    if temporary and now >= deadline:
        status: JobStatus = "sent" if delivered else "failed" if rejected else "bounced"
        return Plan(status=status, delivered=delivered, rejected=rejected, expired=temporary)
    retry_at = min(now + backoff.delay(attempts), deadline) if temporary else None
    if outcome.status == "retry" and not rejected:  # the common case: same job, same recipients, later
        return Plan(status="queued", next_attempt_at=retry_at)
    status = "sent" if delivered else "failed"
    return Plan(status=status, delivered=delivered, rejected=rejected,
                requeue=[r.address for r in temporary], requeue_at=retry_at)


def _final(refusal: RecipientRefusal) -> bool:
    """A 5xx refusal is permanent (RFC 5321 4.2.1); a 4xx one, or none at all, is temporary."""
    return refusal.code is not None and 500 <= refusal.code < 600


def _as_final(refusal: RecipientRefusal, outcome: DeliveryOutcome) -> RecipientRefusal:
    """A recipient refused for now in a transaction that then failed for good: the transaction's reply counts."""
    return RecipientRefusal(address=refusal.address, code=outcome.code, detail=outcome.detail)
