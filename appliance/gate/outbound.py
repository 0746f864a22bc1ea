"""The outbound gate: one pure evaluation of what an agent asks to send, against its policy.

No I/O: the token was checked, the recipients resolved and the parent looked
up before (``SendFacts``); limit state comes through ``LimitCounter``, the
clock as ``SendFacts.now``. The steps, in order, each one able to refuse:

1. thread: a reply is sent in the thread its token was issued for;
2. recipients: at least one, at most ``maxRecipients`` (To and Cc together);
3. capability: a recipient other than the replied message's sender needs
   ``send_email`` in the token's grant (a reply to that sender needs nothing more);
4. allowlist: each such recipient covered by ``outbound.allowRecipients``;
5. leaks: the built-in guards (``gate.leaks``), which no policy turns off;
6. content: the policy's ``outbound.contentGuards``;
7. rate: ``outbound.rateLimit`` per hour and day, for the agent;

then ``send``, with the keys the caller counts once the send is committed.
"""

from __future__ import annotations

__all__ = [
    "ALL",
    "CAPABILITY_MISSING",
    "NOT_FROM_OUTBOX",
    "NO_RECIPIENTS",
    "OUTBOUND_RATE_LIMITED",
    "RECIPIENT_NOT_ALLOWED",
    "SECRET_LEAK_SUSPECTED",
    "SEND_EMAIL",
    "SUBMISSION_CHANGED",
    "TOKEN_THREAD_MISMATCH",
    "TOO_MANY_RECIPIENTS",
    "evaluate_send",
    "outbound_rate_key",
    "recheck_submission",
    "recipient_allowed",
    "scanned_texts",
]

import html as html_lib
from typing import Final, Literal

from appliance.errors import ApplianceError
from appliance.gate.leaks import find_leak
from appliance.gate.limits import DAY, HOUR, LimitCounter
from appliance.guards import scan
from appliance.mail import ascii_address, ascii_domain, normalize_address
from appliance.mail.text import ReadableText, TextPart, html_to_text
from appliance.mail.wire import MessageBytes, read_message
from appliance.outbound.model import ApprovedSubmission, SendDecision, SendFacts, Submission
from appliance.policy import MailPolicy

SEND_EMAIL: Final = "send_email"
"""The capability that lets an agent write to anyone but the sender it replies to."""

CAPABILITY_MISSING: Final = "capability_missing"
"""A recipient other than the replied message's sender, without ``send_email`` granted (403)."""
RECIPIENT_NOT_ALLOWED: Final = "recipient_not_allowed"
"""A recipient ``outbound.allowRecipients`` does not cover (403)."""
TOO_MANY_RECIPIENTS: Final = "too_many_recipients"
"""More To and Cc addresses than ``outbound.maxRecipients`` (403)."""
NO_RECIPIENTS: Final = "no_recipients"
"""Nobody to send to (400: the request is incomplete, no policy was consulted)."""
NOT_FROM_OUTBOX: Final = "not_from_outbox"
"""Mail submitted as an agent (Stalwart's EmailSubmission) that the outbox never approved (403)."""
SUBMISSION_CHANGED: Final = "submission_changed"
"""A submission whose header or body differs from the message the outbox approved (403)."""
TOKEN_THREAD_MISMATCH: Final = "token_thread_mismatch"
"""A reply in a thread other than the one its capability token was issued for (403)."""
OUTBOUND_RATE_LIMITED: Final = "outbound_rate_limited"
"""The agent sent ``outbound.rateLimit`` messages in the window already (429)."""
SECRET_LEAK_SUSPECTED: Final = "secret_leak_suspected"
"""The message carries an appliance secret, a private key or a credential (403)."""

ALL: Final = frozenset({
    CAPABILITY_MISSING, RECIPIENT_NOT_ALLOWED, TOO_MANY_RECIPIENTS, NO_RECIPIENTS, TOKEN_THREAD_MISMATCH,
    OUTBOUND_RATE_LIMITED, SECRET_LEAK_SUSPECTED,
})
"""The outbound gate's own codes; an outbound content guard adds its own ``reason`` besides these."""

_STATUS: Final = {NO_RECIPIENTS: 400, OUTBOUND_RATE_LIMITED: 429}
"""Anything else refused is 403."""


def outbound_rate_key(agent: str) -> str:
    """Messages sent by one agent (replies and new mail alike)."""
    return f"out:{normalize_address(agent)}"


def recipient_allowed(allow: list[str], address: str) -> bool:
    """Whether an ``allowRecipients`` entry covers ``address``: the address itself, its domain, or
    (``*.acme.com``) a parent domain of it, compared lowercased with domains in A-labels."""
    address = ascii_address(address)
    domain = address.rpartition("@")[2]
    for entry in allow:
        wanted = normalize_address(entry)
        if "@" in wanted:
            if ascii_address(wanted) == address:
                return True
        elif wanted.startswith("*."):
            if domain.endswith("." + ascii_domain(wanted[2:])):  # subdomains only, as in inbound Match
                return True
        elif wanted and domain == ascii_domain(wanted):
            return True
    return False


def scanned_texts(facts: SendFacts) -> list[TextPart]:
    """What a recipient reads, as the guards see it: subject, text, HTML (markup, entities decoded,
    and reduced to text, hidden text included) and each text attachment."""
    parts = [TextPart(where="subject", text=facts.subject), TextPart(where="text", text=facts.text)]
    if facts.html:
        parts.append(TextPart(where="html", text=facts.html))
        unescaped = html_lib.unescape(facts.html)
        if unescaped != facts.html:
            parts.append(TextPart(where="html (entities decoded)", text=unescaped))
        parts.append(TextPart(where="html (as text)", text=html_to_text(facts.html)))
    parts += [TextPart(where=f"attachment[{i}]", text=t) for i, t in enumerate(facts.attachment_texts)]
    return parts


def evaluate_send(policy: MailPolicy, facts: SendFacts, limits: LimitCounter) -> SendDecision:
    """Decide whether one message may be sent (the module docstring lists the steps).

    A refusal's ``detail`` starts with the step that decided (``allowlist: …``).
    """
    outbound = policy.outbound

    def refuse(step: str, reason: str, detail: str) -> SendDecision:
        return SendDecision(action="refuse", reason=reason, status=_STATUS.get(reason, 403),
                            detail=f"{step}: {detail}")

    # 1. A token stands for one conversation: replying with it inside another thread would let a
    #    grant for one sender answer (and be threaded with) someone else's mail.
    if facts.kind == "reply" and facts.token_thread_id != facts.thread_id:
        return refuse("thread", TOKEN_THREAD_MISMATCH,
                      f"the token was issued for thread {facts.token_thread_id}, the reply is in {facts.thread_id}")

    # 2. Duplicates (the same address in To and Cc, in other case or as a U-label) count once.
    recipients = list(dict.fromkeys(ascii_address(r) for r in facts.recipients if r.strip()))
    if not recipients:
        return refuse("recipients", NO_RECIPIENTS, "no To or Cc address")
    if len(recipients) > outbound.max_recipients:
        return refuse("recipients", TOO_MANY_RECIPIENTS,
                      f"{len(recipients)} recipients; maxRecipients is {outbound.max_recipients}")

    # 3-4. Anyone but the replied message's sender.
    replied = ascii_address(facts.reply_to) if facts.kind == "reply" and facts.reply_to else None
    others = [r for r in recipients if r != replied]
    if others:
        if SEND_EMAIL not in facts.granted:
            why = "new mail" if facts.kind == "new" else f"a reply that also goes to {others[0]}"
            return refuse("capability", CAPABILITY_MISSING,
                          f"{why} needs the {SEND_EMAIL} capability; the token grants "
                          f"{', '.join(facts.granted) or 'none'}")
        for address in others:
            if not recipient_allowed(outbound.allow_recipients, address):
                return refuse("allowlist", RECIPIENT_NOT_ALLOWED,
                              f"{address} is not covered by outbound.allowRecipients "
                              f"({', '.join(outbound.allow_recipients) or 'empty'})")

    # 5. Always on, before the policy's own guards: a leak is refused whatever the policy says.
    parts = scanned_texts(facts)
    leak = find_leak(parts, facts.secrets)
    if leak is not None:
        return refuse("leaks", SECRET_LEAK_SUSPECTED, leak.detail)

    # 6. The same guards, normalization and forms as inbound mail.
    if outbound.content_guards:
        readable = ReadableText(parts=parts, agent_text=facts.text, html=facts.html)
        hit = scan(readable, outbound.content_guards)
        if hit is not None:
            return refuse("content", hit.reason,
                          f"outbound.contentGuards[{hit.guard_index}] /{hit.pattern}/ matched in "
                          f"{hit.where}: {hit.excerpt!r}")

    # 7. Sliding windows, as inbound: the last 3600 s, the last 86400 s.
    key = outbound_rate_key(facts.agent)
    limit = outbound.rate_limit
    windows: list[tuple[Literal["perHour", "perDay"], int | None, float]] = (
        [("perHour", limit.per_hour, HOUR), ("perDay", limit.per_day, DAY)] if limit is not None else [])
    counts: list[str] = []
    for name, allowed, window in windows:
        if allowed is None:
            continue
        sent = limits.count_since(key, facts.now - window)
        if sent >= allowed:
            return refuse("rate", OUTBOUND_RATE_LIMITED,
                          f"{sent} messages sent in the last {int(window)} s; outbound.rateLimit.{name} is {allowed}")
        counts.append(f"{sent}/{allowed} {name}")

    what = (f"reply to {replied}" if replied in recipients else "reply") if facts.kind == "reply" else "new mail"
    also = f", {len(others)} more allowed by {SEND_EMAIL} and allowRecipients" if others and replied else ""
    rate = f"; rate {', '.join(counts)}" if counts else ""
    return SendDecision(action="send", reason=None, status=202,
                        detail=f"send: {what} in thread {facts.thread_id}, {len(recipients)} recipient(s){also}"
                               f"{rate}; no leak, no content guard matched",
                        rate_keys=[key])


MTA_TRACE_FIELDS: Final = frozenset({
    "received", "return-path", "dkim-signature", "arc-seal", "arc-message-signature",
    "arc-authentication-results", "authentication-results", "x-appliance-decision"})
"""Header fields an MTA may add to a submission on its way out; any other field must be the outbox's."""


def _fields(message: MessageBytes) -> list[tuple[str, bytes]]:
    return [(f.name.lower(), b" ".join(f.value.split())) for f in message.fields]


def _normalized_body(message: MessageBytes) -> bytes:
    return message.data[message.header_end:].replace(b"\r\n", b"\n").rstrip(b"\n")


def recheck_submission(policy: MailPolicy, submission: Submission, approved: ApprovedSubmission | None) -> SendDecision:
    """The outbound policy's second word, where an agent's mail leaves the MTA (Stalwart's hook).

    The outbox decided the message with ``evaluate_send`` (token, capability, allowlist, guards, rate)
    and queued it; what reaches the MTA as the agent must be that message: the same header fields (the
    MTA may add its trace), the same body, for recipients it was approved for, within the policy's
    ``maxRecipients`` as it is now. Anything else, a submission that bypassed the outbox included, is
    refused.
    """

    def refuse(step: str, reason: str, detail: str) -> SendDecision:
        return SendDecision(action="refuse", reason=reason, status=403, detail=f"{step}: {detail}")

    if approved is None:
        return refuse("outbox", NOT_FROM_OUTBOX,
                      f"{submission.message_id or 'a message without Message-ID'} is not a message the outbox "
                      f"approved and queued for {submission.agent}; agents send through the appliance's API")
    recipients = list(dict.fromkeys(r.lower() for r in submission.recipients))
    stray = [r for r in recipients if r not in approved.recipients]
    if stray:
        return refuse("recipients", RECIPIENT_NOT_ALLOWED,
                      f"{stray[0]} is not a recipient the outbox approved for {approved.email_id}")
    if len(recipients) > policy.outbound.max_recipients:
        return refuse("recipients", TOO_MANY_RECIPIENTS,
                      f"{len(recipients)} recipients; maxRecipients is {policy.outbound.max_recipients}")
    try:
        sent, queued = read_message(submission.raw), read_message(approved.raw)
    except ApplianceError as exc:
        return refuse("content", SUBMISSION_CHANGED, f"the submission cannot be read: {exc}")
    if _normalized_body(sent) != _normalized_body(queued):
        return refuse("content", SUBMISSION_CHANGED, f"the body differs from {approved.email_id}'s")
    theirs = [f for f in _fields(sent) if f[0] not in MTA_TRACE_FIELDS]
    ours = [f for f in _fields(queued) if f[0] not in MTA_TRACE_FIELDS]
    if theirs != ours:
        differing = [a[0] for a, b in zip(theirs, ours, strict=False) if a != b]
        extra = theirs[len(ours):] or ours[len(theirs):]
        changed = differing[0] if differing else extra[0][0]
        return refuse("content", SUBMISSION_CHANGED, f"header field {changed} differs from {approved.email_id}'s")
    return SendDecision(action="send", reason=None, status=202,
                        detail=f"submission: {approved.email_id} as the outbox approved it, "
                               f"{len(recipients)} recipient(s)")
