"""Gathering the facts for one message and running the gate on them.

The one entry point the SMTP intake, the Stalwart hook and ``policy explain``
share: strict parse, content extraction, mail authentication (DNS through the
given resolver), then the pure ``evaluate``.
"""

from __future__ import annotations

__all__ = ["assess", "gather", "new_decision_id", "read_bytes"]

import asyncio
import os
import time

from appliance.errors import MalformedMessage, MessageTooComplex, MessageTooLarge
from appliance.gate.decision import Decision, Envelope
from appliance.gate.evaluate import Facts, evaluate
from appliance.gate.inspection import Inspection, inspect_message
from appliance.gate.limits import LimitCounter
from appliance.mail import (
    MessageBytes,
    ReadingLimits,
    Unreadable,
    read_message,
    thread_root,
    unreadable_from,
)
from appliance.mailauth import Resolver, authenticate
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
    reading: ReadingLimits | None = None,
    thread_id: str | None = None,
) -> Decision:
    """Decide one message for one agent as the gate does at SMTP DATA time."""
    message, unreadable = read_bytes(raw, max_size=max_size, limits=reading)
    read = (await asyncio.to_thread(inspect_message, message, reading, policy.content_guards)
            if message is not None else Inspection(unreadable=unreadable))
    facts = await gather(envelope, raw, message, read, agent=agent, resolver=resolver, now=now, max_size=max_size,
                         thread_id=thread_id)
    return evaluate(policy, facts, limits)


def read_bytes(raw: bytes, *, max_size: int | None = None, limits: ReadingLimits | None = None
               ) -> tuple[MessageBytes | None, Unreadable | None]:
    """The one byte-level reading of ``raw``, or why there is none.

    A message over ``max_size`` is not read at all: the gate refuses it on its size.
    """
    if max_size is not None and len(raw) > max_size:
        return None, None
    try:
        return read_message(raw, limits), None
    except (MalformedMessage, MessageTooLarge, MessageTooComplex) as exc:
        return None, unreadable_from(exc)


async def gather(
    envelope: Envelope,
    raw: bytes,
    message: MessageBytes | None,
    read: Inspection,
    *,
    agent: str,
    resolver: Resolver,
    now: float,
    max_size: int | None = None,
    thread_id: str | None = None,
    size: int | None = None,
) -> Facts:
    """Establish the facts the gate decides on from a message's reading: authenticate it.

    ``message`` is the one byte-level reading of ``raw`` (``read_bytes``) and
    ``read`` its parse, readable text and guard scan (``inspect_message``, run by a reader);
    DKIM verifies those same bytes. ``thread_id`` overrides the header-derived
    thread (the store knows more); ``size`` the message's size when ``raw`` is
    not the whole of it (an intake that refused it while receiving).
    """
    parsed = read.parsed
    auth = None
    if parsed is not None and message is not None and read.readable is not None:
        auth = await authenticate(
            message.data,
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
        size=len(raw) if size is None else size,
        max_size=max_size,
        message=message,
        parsed=parsed,
        unreadable=read.unreadable,
        readable=read.readable,
        guard_hit=read.guard_hit,
        guards_scanned=read.scanned,
        auth=auth,
        thread_id=thread_id or (thread_root(parsed) if parsed is not None else "T-none"),
        now=now,
    )
