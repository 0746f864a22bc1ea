"""Gathering the facts for one message and running the gate on them.

The one entry point the SMTP intake, the Stalwart hook and ``policy explain``
share: strict parse, content extraction, mail authentication (DNS through the
given resolver), then the pure ``evaluate``.
"""

from __future__ import annotations

__all__ = ["assess", "gather", "new_decision_id"]

import os
import time

from appliance.errors import MalformedMessage
from appliance.gate.decision import Decision, Envelope
from appliance.gate.evaluate import Facts, evaluate
from appliance.gate.limits import LimitCounter
from appliance.guards import extract_readable
from appliance.mailauth import Resolver, authenticate
from appliance.message import ParsedMessage, parse_message, thread_root
from appliance.policy import MailPolicy


def new_decision_id(now: float | None = None) -> str:
    """A time-ordered unique id: 12 hex digits of milliseconds, then 16 random."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"d{ms:012x}{os.urandom(8).hex()}"


async def assess(
    policy: MailPolicy,
    envelope: Envelope,
    raw: bytes,
    *,
    agent: str,
    resolver: Resolver,
    limits: LimitCounter,
    now: float,
    max_size: int | None = None,
    thread_id: str | None = None,
) -> Decision:
    """Decide one message for one agent as the gate does at SMTP DATA time."""
    facts = await gather(envelope, raw, agent=agent, resolver=resolver, now=now, max_size=max_size,
                         thread_id=thread_id)
    return evaluate(policy, facts, limits)


async def gather(
    envelope: Envelope,
    raw: bytes,
    *,
    agent: str,
    resolver: Resolver,
    now: float,
    max_size: int | None = None,
    parsed: ParsedMessage | None = None,
    thread_id: str | None = None,
) -> Facts:
    """Establish the facts the gate decides on: parse, extract, authenticate.

    ``parsed`` saves a second parse when the caller already has one;
    ``thread_id`` overrides the header-derived thread (the store knows more).
    """
    malformed: str | None = None
    if parsed is None:
        try:
            parsed = parse_message(raw)
        except MalformedMessage as exc:
            malformed = str(exc)
    auth = None
    readable = None
    too_large = max_size is not None and len(raw) > max_size
    if parsed is not None and not too_large:
        readable = extract_readable(parsed.email)
        auth = await authenticate(
            raw,
            client_ip=envelope.client_ip,
            helo=envelope.helo,
            mail_from=envelope.mail_from,
            from_domain=parsed.sender.domain,
            resolver=resolver,
            now=now,
        )
    return Facts(
        decision_id=new_decision_id(now),
        agent=agent.lower(),
        envelope=envelope,
        size=len(raw),
        max_size=max_size,
        parsed=parsed,
        malformed=malformed,
        readable=readable,
        auth=auth,
        thread_id=thread_id or (thread_root(parsed) if parsed is not None else "T-none"),
        now=now,
    )
