"""The policy document: what may reach an agent, and what it may then do.

Field names are snake_case in Python and camelCase on the wire (TOML, YAML,
JSON), matching the product page's ``MailPolicy``.
"""

from __future__ import annotations

__all__ = [
    "Action",
    "AuditLog",
    "ContentGuard",
    "MailPolicy",
    "Match",
    "OutboundPolicy",
    "OutboundRateLimit",
    "RateLimit",
    "SenderRule",
    "TokenBudget",
]

import re
from typing import Annotated, Literal

import msgspec

Action = Literal["accept", "bounce", "tempfail", "quarantine", "drop"]
"""What the gate does with a message (see product.md, "Actions")."""

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    """Base of every policy struct: immutable, camelCase on the wire, unknown keys refused."""


class Match(_Wire, frozen=True):
    """Which senders a rule covers, and what proof of identity it demands.

    Exactly one of ``address`` or ``domain``. ``domain="acme.com"`` matches that
    domain only; ``domain="*.acme.com"`` matches its subdomains (not acme.com
    itself). No other form is accepted: ``.acme.com`` (which would match
    nothing), other wildcards, empty labels and addresses in ``domain`` are
    refused when the policy loads; one trailing dot is fine. ``address`` is one
    bare addr-spec, ``boss@acme.com``: exactly one ``@``, no display name.
    Comparison is case-insensitive in local part and domain.
    """

    address: str | None = None
    domain: str | None = None
    require_dkim: bool = False
    """Satisfied only by a valid DKIM signature aligned with the From domain that covers the whole body."""
    require_spf: bool = False
    """Satisfied only by SPF pass for an envelope domain aligned with the From domain."""
    require_dmarc: bool = False
    """Satisfied only by DMARC pass for the From domain."""


class RateLimit(_Wire, frozen=True):
    """Messages accepted per sliding window, counted per sender rule."""

    per_minute: PositiveInt | None = None
    per_hour: PositiveInt | None = None
    per_day: PositiveInt | None = None


class TokenBudget(_Wire, frozen=True):
    """Estimated tokens the agent may spend: per thread (lifetime) and per day (sliding 24 h)."""

    per_thread: PositiveInt | None = None
    per_day: PositiveInt | None = None


class SenderRule(_Wire, frozen=True):
    """One allowed sender (or domain) and what the agent may do for it."""

    match: Match
    capabilities: list[str] = msgspec.field(default_factory=list)
    rate_limit: RateLimit | None = None
    token_budget: TokenBudget | None = None
    action: Literal["accept", "quarantine", "drop"] = "accept"
    """What happens to a message that passes every check (``quarantine`` holds it for review)."""


class ContentGuard(_Wire, frozen=True):
    """A pattern that, found in what the agent would read, rejects the message."""

    reject: re.Pattern[str]
    reason: str = "content_guard_matched"


class AuditLog(_Wire, frozen=True):
    """How long decisions are kept, and whether a body hash is recorded."""

    retention_days: PositiveInt = 90
    include_body_hash: bool = True


class OutboundRateLimit(_Wire, frozen=True):
    """Messages the agent may send per sliding window (replies and new mail alike)."""

    per_hour: PositiveInt | None = None
    per_day: PositiveInt | None = None


class OutboundPolicy(_Wire, frozen=True):
    """What the agent may send, beyond the reply a capability token always allows.

    A reply to a message's verified sender, in its thread, needs only that
    message's capability token. Writing to anyone else needs the ``send_email``
    capability in the token's grant and a recipient ``allowRecipients`` covers.
    """

    allow_recipients: list[str] = msgspec.field(default_factory=list)
    """Addresses (``boss@acme.com``), domains (``acme.com``) and subdomains (``*.acme.com``)."""
    rate_limit: OutboundRateLimit | None = None
    max_recipients: PositiveInt = 10
    """To and Cc together, per message."""
    content_guards: list[ContentGuard] = msgspec.field(default_factory=list)
    """Patterns that refuse a send whose text, subject or attachments match (same syntax as inbound);
    the built-in leak guards (the appliance's secrets, private keys, API-key shapes) always apply."""


class MailPolicy(_Wire, frozen=True):
    """The whole policy document for one agent: ``senders`` and the rest govern inbound mail."""

    default_action: Action = "bounce"
    senders: list[SenderRule] = msgspec.field(default_factory=list)
    content_guards: list[ContentGuard] = msgspec.field(default_factory=list)
    audit_log: AuditLog = msgspec.field(default_factory=AuditLog)
    outbound: OutboundPolicy = msgspec.field(default_factory=OutboundPolicy)
