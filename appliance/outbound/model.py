"""What crosses the rooms of the send half: a request, its facts, the gate's verdict, the message.

    API handler ──SendRequest──> outbound.service.Outbox.submit
        token checked (delivery.tokens) ──> SendFacts ──> gate.outbound.evaluate_send ──> SendDecision
        compose (outbound.compose) ──> signed by mailauth.signing ──> OutboundMessage
        one transaction: the Sent copy, the audit row, the queue job ──> 202 {emailId}
    outbound.queue worker ──> transport (capture | smarthost | direct) ──> message.sent / message.bounced
"""

from __future__ import annotations

__all__ = [
    "ApprovedSubmission",
    "BlobRef",
    "Delivery",
    "DeliveryOutcome",
    "OutboundMessage",
    "RecipientRefusal",
    "SendDecision",
    "SendFacts",
    "SendKind",
    "SendRequest",
    "SendResult",
    "Submission",
]

from typing import Annotated, Literal

import msgspec

SendKind = Literal["reply", "new"]
"""A reply to a received message (its token always allows one), or new mail (needs ``send_email``)."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """API bodies: camelCase, unknown fields refused."""


class BlobRef(_Wire, frozen=True):
    """An attachment uploaded with ``POST /api/v1/blobs``, by id."""

    blob_id: str
    filename: str | None = None
    """Overrides the name given at upload."""


class SendRequest(_Wire, frozen=True):
    """Body of ``POST /api/v1/messages/{emailId}/reply`` and ``POST /api/v1/messages``.

    The capability token travels in the ``X-Capability-Token`` header (or ``capabilityToken``).
    """

    text: Annotated[str, msgspec.Meta(max_length=1_000_000)]
    html: Annotated[str, msgspec.Meta(max_length=2_000_000)] | None = None
    to: list[str] = msgspec.field(default_factory=list)
    """New mail only; a reply goes to the replied message's verified sender."""
    cc: list[str] = msgspec.field(default_factory=list)
    subject: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    """New mail: required. Reply: ``Re: `` + the parent's subject unless given."""
    attachments: list[BlobRef] = msgspec.field(default_factory=list)
    capability_token: str | None = None


class SendFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the outbound gate decides on, established before it runs (no I/O in the gate)."""

    agent: str
    kind: SendKind
    recipients: list[str]
    """Every To and Cc address, lowercased, domains in A-labels."""
    granted: list[str]
    """Capabilities the (valid) token grants."""
    token_thread_id: str
    """The thread the token was issued for."""
    thread_id: str
    """The thread the message is sent in (a reply: its parent's)."""
    reply_to: str | None
    """A reply: the address it may always go to (the parent's verified sender, or an aligned Reply-To)."""
    subject: str
    text: str
    html: str | None
    attachment_texts: list[str]
    """Attachments that decode as text, for the guards."""
    secrets: list[str]
    """The appliance's own secrets (API keys, webhook secrets, tokens) the message must not carry."""
    now: float


class SendDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The outbound gate's verdict; a refusal carries the reason code and the HTTP status to answer."""

    action: Literal["send", "refuse"]
    reason: str | None
    status: int
    """202 for send; 403 for a policy refusal; 429 for a rate limit."""
    detail: str
    """What decided, in words (the step and what it found)."""
    rate_keys: list[str] = msgspec.field(default_factory=list)
    """What to count once the send is committed."""


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A composed, signed message ready to be queued."""

    email_id: str
    agent: str
    thread_id: str
    message_id: str
    """``<...@our hostname>``."""
    mail_from: str
    """Envelope sender (the agent's address)."""
    recipients: list[str]
    subject: str
    in_reply_to: str | None
    raw: bytes
    """The whole message, DKIM-Signature headers first."""
    body_sha256: str


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient domain's share of a queued message, as a transport gets it."""

    job_id: str
    email_id: str
    agent: str
    mail_from: str
    recipients: list[str]
    raw: bytes
    attempts: int


class DeliveryOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a transport made of one delivery attempt."""

    status: Literal["sent", "retry", "failed"]
    """``sent``: the peer answered 250; ``retry``: 4xx or no connection; ``failed``: 5xx (final)."""
    code: int | None
    detail: str
    """The peer's reply or the error, for the agent's event and the audit."""
    peer: str | None = None
    """Which host answered."""
    refused: list[RecipientRefusal] = msgspec.field(default_factory=list)
    """Recipients the peer refused one by one (RCPT TO, RFC 5321 3.3) while it took the others (or none):
    a 5xx refusal is final for that recipient, a 4xx one is retried; the rest share ``status``."""


class RecipientRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient the peer would not take, with its reply."""

    address: str
    code: int | None
    """The reply code (``None``: refused before any answer, e.g. an address the peer cannot be given)."""
    detail: str


class SendResult(_Wire, frozen=True):
    """The ``202`` answer: the message is queued (committed), not yet delivered."""

    email_id: str
    message_id: str
    thread_id: str
    status: Literal["queued"] = "queued"


class ApprovedSubmission(msgspec.Struct, frozen=True, kw_only=True):
    """A message the outbox approved and has queued: what may leave as it (``appliance.store.outbound``)."""

    email_id: str
    recipients: list[str]
    """Recipients of its jobs still queued (lowercase)."""
    raw: bytes


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """Mail an agent's authenticated session hands the MTA (Stalwart's hook for EmailSubmission)."""

    agent: str
    mail_from: str
    recipients: list[str]
    """The envelope's, lowercase."""
    message_id: str | None
    raw: bytes
