"""Stalwart's MTA hook on the wire: the JSON Stalwart POSTs, and the JSON it expects back.

Field for field as Stalwart's ``crates/smtp/src/inbound/hooks/mod.rs`` (0.15/0.16)
serializes them. Unknown fields are ignored, so a newer Stalwart adding one does
not turn every message into a tempfail. Beware ``enhanced_status``: the
response key is snake_case (Stalwart's docs say ``enhancedStatus``, which it
ignores; both are sent).
"""

from __future__ import annotations

__all__ = [
    "AddHeader",
    "AddRecipient",
    "Address",
    "ChangeFrom",
    "ChangeHeader",
    "Client",
    "Context",
    "DeleteHeader",
    "DeleteRecipient",
    "HookAction",
    "HookEnvelope",
    "HookMessage",
    "HookRequest",
    "HookResponse",
    "InsertHeader",
    "Modification",
    "ProtocolVersion",
    "Queue",
    "ReplaceContents",
    "Sasl",
    "Server",
    "SmtpResponse",
    "Stage",
    "Tls",
    "decode_request",
    "encode_response",
]

from typing import Literal

import msgspec

Stage = Literal["connect", "ehlo", "auth", "mail", "rcpt", "data"]
HookAction = Literal["accept", "reject", "discard", "quarantine"]


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the request structs: immutable; unknown fields ignored.

    Subclasses repeat ``frozen`` and ``kw_only``: mypy does not see them inherited.
    """


class Client(_Wire, frozen=True, kw_only=True):
    ip: str
    port: int = 0
    ptr: str | None = None
    """The first PTR name of the client's address, when Stalwart looked it up."""
    helo: str | None = None
    """The HELO/EHLO name; null before EHLO."""
    active_connections: int = msgspec.field(default=0, name="activeConnections")


class Sasl(_Wire, frozen=True, kw_only=True):
    """Present only when the SMTP session authenticated (e.g. JMAP EmailSubmission)."""

    login: str
    method: str | None = None


class Tls(_Wire, frozen=True, kw_only=True):
    """Present only when the session runs over TLS."""

    version: str
    cipher: str
    cipher_bits: int | None = msgspec.field(default=None, name="cipherBits")
    cert_issuer: str | None = msgspec.field(default=None, name="certIssuer")
    cert_subject: str | None = msgspec.field(default=None, name="certSubject")


class Server(_Wire, frozen=True, kw_only=True):
    name: str | None = None
    """``"Stalwart v<version>"``."""
    port: int = 0
    ip: str | None = None


class Queue(_Wire, frozen=True, kw_only=True):
    id: str
    """The queue id, hex; DATA stage only."""


class ProtocolVersion(_Wire, frozen=True, kw_only=True):
    version: int = 1


class Context(_Wire, frozen=True, kw_only=True):
    stage: Stage
    client: Client
    sasl: Sasl | None = None
    tls: Tls | None = None
    server: Server = msgspec.field(default_factory=Server)
    queue: Queue | None = None
    protocol: ProtocolVersion = msgspec.field(default_factory=ProtocolVersion)


class Address(_Wire, frozen=True, kw_only=True):
    address: str
    """Lowercased by Stalwart; empty for the null sender."""
    parameters: dict[str, str] | None = None


class HookEnvelope(_Wire, frozen=True, kw_only=True):
    """From MAIL on. At the RCPT stage the recipient being checked is the last of ``to``."""

    from_: Address = msgspec.field(name="from")
    to: list[Address] = msgspec.field(default_factory=list)


class HookMessage(_Wire, frozen=True, kw_only=True):
    """DATA stage only: the message split as Stalwart parsed it."""

    headers: list[tuple[str, str]]
    """``[name, rawValue]``; rawValue keeps its leading space, folding and trailing CRLF."""
    server_headers: list[tuple[str, str]] = msgspec.field(default_factory=list,
                                                          name="serverHeaders")
    contents: str
    """The body only, after the blank line."""
    size: int
    """Length of the whole raw message, in bytes."""


class HookRequest(_Wire, frozen=True, kw_only=True):
    context: Context
    envelope: HookEnvelope | None = None
    message: HookMessage | None = None


class SmtpResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The SMTP reply Stalwart gives; used only when both ``status`` and ``message`` are set."""

    status: int | None = None
    enhanced_status: str | None = None
    """The key Stalwart reads (snake_case)."""
    enhanced_status_documented: str | None = msgspec.field(default=None, name="enhancedStatus")
    """The same value under the key Stalwart's docs name; ignored by the released code."""
    message: str | None = None
    disconnect: bool = False

    @classmethod
    def of(cls, status: int, enhanced: str, message: str, *,
           disconnect: bool = False) -> SmtpResponse:
        return cls(status=status, enhanced_status=enhanced, enhanced_status_documented=enhanced,
                   message=message, disconnect=disconnect)


class _Modification(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of the modifications, tagged by ``type``; honoured at the DATA stage only."""


class AddHeader(_Modification, tag="addHeader", frozen=True, kw_only=True):
    """Prepended to the message as ``name: value``."""

    name: str
    value: str


class InsertHeader(_Modification, tag="insertHeader", frozen=True, kw_only=True):
    index: int
    name: str
    value: str


class ChangeHeader(_Modification, tag="changeHeader", frozen=True, kw_only=True):
    index: int
    """1-based among the headers called ``name``."""
    name: str
    value: str


class DeleteHeader(_Modification, tag="deleteHeader", frozen=True, kw_only=True):
    index: int
    """1-based among the headers called ``name``."""
    name: str


class ChangeFrom(_Modification, tag="changeFrom", frozen=True, kw_only=True):
    value: str
    parameters: dict[str, str | None] = msgspec.field(default_factory=dict)
    """String or null values only: a number makes Stalwart tempfail."""


class AddRecipient(_Modification, tag="addRecipient", frozen=True, kw_only=True):
    value: str
    parameters: dict[str, str | None] = msgspec.field(default_factory=dict)


class DeleteRecipient(_Modification, tag="deleteRecipient", frozen=True, kw_only=True):
    value: str


class ReplaceContents(_Modification, tag="replaceContents", frozen=True, kw_only=True):
    value: str


Modification = (AddHeader | InsertHeader | ChangeHeader | DeleteHeader | ChangeFrom | AddRecipient
                | DeleteRecipient | ReplaceContents)


class HookResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    action: HookAction
    response: SmtpResponse | None = None
    modifications: list[Modification] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(HookRequest)
_encoder = msgspec.json.Encoder()


def decode_request(body: bytes) -> HookRequest:
    """Parse a hook request; ``msgspec.DecodeError`` (or ``ValidationError``) says what is wrong."""
    return _decoder.decode(body)


def encode_response(response: HookResponse) -> bytes:
    return _encoder.encode(response)
