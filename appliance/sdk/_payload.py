"""The events an agent receives, by webhook or event stream: ``{"type", "timestamp", "data"}``.

Keys are camelCase on the wire (a contract). Decoding ignores keys this SDK
does not know, so an older SDK keeps working when the appliance adds fields.
"""

from __future__ import annotations

__all__ = [
    "Attachment",
    "Auth",
    "BouncedRecipient",
    "DeliveryFailed",
    "DeliveryFailedData",
    "EndpointDisabled",
    "EndpointDisabledData",
    "Event",
    "MessageBounced",
    "MessageBouncedData",
    "MessageData",
    "MessageQuarantined",
    "MessageReceived",
    "MessageSent",
    "MessageSentData",
    "QuarantineData",
    "parse_event",
]

from datetime import datetime

import msgspec

from appliance.sdk._errors import PayloadError


class Auth(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """RFC 8601 result words the appliance found (``pass``, ``fail``, ``none``...)."""

    spf: str = "none"
    dkim: str = "none"
    dmarc: str = "none"


class Attachment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An attachment's metadata; fetch the bytes from ``download_path`` with the agent's key."""

    index: int
    filename: str | None
    content_type: str
    size: int
    download_path: str


class MessageData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.received`` event: a message the gate let through."""

    agent: str
    decision_id: str
    email_id: str
    thread_id: str
    message_id: str | None
    sender: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    subject: str
    received_at: datetime
    text: str
    """What to read: the text/plain body, or the HTML body reduced to text (cut at the appliance's cap)."""
    text_truncated: bool = False
    html: str | None = None
    """The HTML body as sent, when there is one (cut at the appliance's cap)."""
    html_truncated: bool = False
    body_path: str = ""
    """GET it (agent key) for the whole ``text`` and ``html`` when either was cut."""
    raw_path: str = ""
    """GET it (agent key) for the message as received (RFC 5322 bytes)."""
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    auth: Auth = msgspec.field(default_factory=Auth)
    capabilities: list[str] = msgspec.field(default_factory=list)
    """What the operator's policy grants this sender: the agent must do nothing else."""
    budget: int | None = None
    """Tokens left in the tightest budget of the sender's rule; null when none applies."""
    capability_token: str = ""
    """Short-lived proof of ``capabilities`` for this thread, issued at send time (introspect to check)."""


class QuarantineData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.quarantined`` event: that something was held, never its content."""

    agent: str
    decision_id: str
    email_id: str
    sender: str = msgspec.field(name="from")
    received_at: datetime
    reason: str | None = None


class DeliveryFailedData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``delivery.failed`` event: a webhook delivery gave up (the operator can replay it)."""

    agent: str
    delivery_id: str
    event_type: str
    attempts: int
    email_id: str | None = None
    last_status: int | None = None
    last_error: str | None = None


class EndpointDisabledData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of an ``endpoint.disabled`` event: the webhook answered 410; nothing more is sent to it."""

    agent: str
    url: str
    delivery_id: str
    """The delivery the endpoint refused."""
    reason: str


class MessageSentData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.sent`` event: a peer took the agent's message for these recipients."""

    agent: str
    email_id: str
    """The Sent copy (``GET /api/v1/messages/{emailId}``), as the reply or send answered."""
    message_id: str
    thread_id: str
    recipients: list[str]
    peer: str | None = None
    """The host that answered 250 (``capture`` when nothing left the machine, ``local`` for a local agent)."""
    reply: str = ""
    """The peer's reply, e.g. ``250 2.0.0 Ok: queued as 4bX...``."""
    attempts: int = 1
    sent_at: datetime
    job_id: str = ""


class BouncedRecipient(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One recipient that will not get the message, and what was said about it."""

    address: str
    code: int | None = None
    """The SMTP reply code, when there was one."""
    status: str | None = None
    """The enhanced status code (RFC 3463), e.g. ``5.1.1``, when known."""
    detail: str = ""


class MessageBouncedData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``data`` of a ``message.bounced`` event: these recipients will not get the agent's message."""

    agent: str
    email_id: str
    message_id: str
    thread_id: str
    reason: str
    """How the appliance knows: ``rejected`` (a 5xx reply), ``expired`` (retried too long), ``dsn`` (a DSN)."""
    recipients: list[BouncedRecipient]
    attempts: int = 0
    bounced_at: datetime
    job_id: str | None = None


class MessageReceived(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message.received"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: MessageData


class MessageQuarantined(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message.quarantined"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: QuarantineData


class DeliveryFailed(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="delivery.failed"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: DeliveryFailedData


class EndpointDisabled(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="endpoint.disabled"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: EndpointDisabledData


class MessageSent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message.sent"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: MessageSentData


class MessageBounced(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="message.bounced"):
    timestamp: datetime
    """When the event happened (the ``webhook-timestamp`` header says when it was sent)."""
    data: MessageBouncedData


Event = MessageReceived | MessageQuarantined | DeliveryFailed | EndpointDisabled | MessageSent | MessageBounced
"""Any event; match on the class (or on ``type``)."""

_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def parse_event(body: bytes | str) -> Event:
    """The typed event in a webhook body or an event-stream ``data`` field; PayloadError otherwise."""
    try:
        event: Event = _decoder.decode(body)
        return event
    except msgspec.DecodeError as exc:
        raise PayloadError(f"not an appliance event: {exc}") from exc
