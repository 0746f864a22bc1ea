"""What the agent API answers, typed: one Struct per answer.

Keys are camelCase on the wire. Decoding ignores keys this SDK does not know,
so an older SDK keeps working when the appliance adds fields.
"""

from __future__ import annotations

__all__ = [
    "AttachmentContent",
    "AttachmentSummary",
    "Blob",
    "MessageBody",
    "MessageSummary",
    "RecipientStatus",
    "SendResult",
    "SentMessage",
    "StreamEvent",
    "TokenInfo",
    "ToolInfo",
    "UsageResult",
]

from datetime import datetime
from typing import Any

import msgspec

from appliance.sdk._payload import Event


class _Answer(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of the answers: immutable, camelCase on the wire."""


class AttachmentSummary(_Answer, frozen=True):
    """One attachment of a message: its number, name, type and size."""

    index: int
    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int = 0
    download_path: str | None = None
    """Where its bytes are (a received message's)."""


class MessageSummary(_Answer, frozen=True):
    """``GET /api/v1/messages/{emailId}``: a message of the agent's, received or sent, without its content."""

    email_id: str
    thread_id: str = ""
    message_id: str | None = None
    """The RFC 5322 ``Message-ID``, angle brackets included."""
    mailbox: str = ""
    """Where it is kept (``inbox``, ``sent``...)."""
    sender: str = msgspec.field(name="from", default="")
    to: list[str] = msgspec.field(default_factory=list)
    cc: list[str] = msgspec.field(default_factory=list)
    subject: str = ""
    received_at: datetime | None = None
    """When it was received (a sent message: when it was queued)."""
    size: int | None = None
    decision_id: str | None = None
    attachments: list[AttachmentSummary] = msgspec.field(default_factory=list)


class MessageBody(_Answer, frozen=True):
    """``GET /api/v1/messages/{emailId}/body``: the whole readable body, never cut."""

    email_id: str
    text: str
    html: str | None = None


class AttachmentContent(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/messages/{emailId}/attachments/{index}``: the bytes and what the appliance said of them."""

    content: bytes
    content_type: str
    filename: str | None = None


class Blob(_Answer, frozen=True):
    """``POST /api/v1/blobs``: an upload to name in a send's ``attachments`` (it expires unused after a day)."""

    blob_id: str
    size: int
    content_type: str
    filename: str | None = None


class SendResult(_Answer, frozen=True):
    """``202`` of a reply or a new message: queued (committed), not yet delivered.

    Its fate arrives later as a ``message.sent`` or ``message.bounced`` event for ``email_id``.
    """

    email_id: str
    message_id: str
    """The ``Message-ID`` it carries, angle brackets included."""
    thread_id: str
    status: str = "queued"


class RecipientStatus(_Answer, frozen=True):
    """Where one recipient's copy of a sent message is."""

    address: str
    status: str
    """``queued`` (not tried yet), ``retrying`` (temporary failures), ``sent`` (a peer took it), ``bounced``."""
    attempts: int = 0
    last_code: int | None = None
    last_detail: str | None = None
    peer: str | None = None


class SentMessage(_Answer, frozen=True):
    """``GET /api/v1/outbox[/{emailId}]``: a message the agent sent, and the fate of each recipient's copy."""

    email_id: str
    thread_id: str
    message_id: str | None = None
    subject: str = ""
    to: list[str] = msgspec.field(default_factory=list)
    cc: list[str] = msgspec.field(default_factory=list)
    sent_at: datetime | None = None
    """When it was queued."""
    size: int | None = None
    status: str = "queued"
    """The least advanced recipient's (``queued`` or ``retrying`` while any is; else ``bounced`` if any)."""
    recipients: list[RecipientStatus] = msgspec.field(default_factory=list)


class ToolInfo(_Answer, frozen=True):
    """``GET /api/v1/tools``: an operator tool, the capability it needs, and what it takes (JSON schema)."""

    name: str
    capability: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class UsageResult(_Answer, frozen=True):
    """``POST /api/v1/usage``: what was charged to the thread, and its total so far."""

    thread_id: str
    charged: int
    thread_total: int


class TokenInfo(_Answer, frozen=True):
    """``POST /api/v1/tokens/introspect``: what a capability token grants (``active`` false: nothing)."""

    active: bool
    agent: str | None = None
    thread_id: str | None = None
    decision_id: str | None = None
    email_id: str | None = None
    capabilities: list[str] = msgspec.field(default_factory=list)
    exp: int | None = None
    """Expiry, unix seconds."""


class StreamEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of ``GET /api/v1/events``.

    ``id`` is the delivery id (the webhook's ``webhook-id``): deduplicate on it. ``event`` is None for a
    type this SDK does not know yet (``data`` still holds it, as JSON).
    """

    id: str
    type: str
    event: Event | None
    data: bytes
