"""Strict reading of an RFC 5322 message: the facts every later step relies on.

Step 1 of the gate. The From header must hold exactly one mailbox; a display
name is only ever a label, so ``"boss@acme.com" <evil@x.test>`` is from
``evil@x.test``.
"""

from __future__ import annotations

__all__ = [
    "POLICY",
    "Mailbox",
    "ParsedMessage",
    "normalize_address",
    "parse_message",
    "sniff_message_id",
    "thread_root",
    "without_forged_trace",
]

import email.parser
import email.policy
import functools
import hashlib
import re
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry
from email.message import EmailMessage

import msgspec

from appliance.errors import MalformedMessage


class _MemoHeaders(HeaderRegistry):
    """The standard header registry, memoized.

    ``policy.default`` parses a header's value again on every access, and the
    gate reads the same headers many times (and the same values recur across
    messages). Header objects are immutable strings, so sharing them is safe.
    """

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - one registry for the process; bounded
    def __call__(self, name: str, value: str) -> BaseHeader:
        return super().__call__(name, value)


POLICY = email.policy.default.clone(header_factory=_MemoHeaders())
"""The email policy every part of the appliance parses messages with."""
_PARSER = email.parser.BytesParser(policy=POLICY)
_MSGID = re.compile(r"<[^<>\s]+>")
_ID_HEADERS = frozenset({"message-id", "in-reply-to", "references"})


class Mailbox(msgspec.Struct, frozen=True, kw_only=True):
    """One mailbox of an address header."""

    address: str
    """The addr-spec, lowercased (local part and domain both: we match case-insensitively)."""
    display_name: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class ParsedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message that passed strict parsing, with the headers the appliance uses."""

    sender: Mailbox
    """The single RFC 5322 From mailbox."""
    to: list[Mailbox]
    cc: list[Mailbox]
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    email: EmailMessage
    """The parsed message, for content extraction."""


def normalize_address(address: str) -> str:
    """The form addresses are compared in: trimmed and lowercased."""
    return address.strip().lower()


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` strictly; raise MalformedMessage saying what is wrong."""
    try:
        return _parse(raw)
    except MalformedMessage:
        raise
    except Exception as exc:  # the email package has bugs on hostile input; refuse, never crash
        raise MalformedMessage(f"message could not be parsed: {type(exc).__name__}") from exc


def _parse(raw: bytes) -> ParsedMessage:
    msg = _PARSER.parsebytes(raw)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default always builds one
        raise MalformedMessage("message could not be parsed")
    froms = msg.get_all("From") or []
    if len(froms) != 1:
        raise MalformedMessage(f"expected exactly one From header, found {len(froms)}")
    sender_list = _mailboxes(froms[0], "From")
    if len(sender_list) != 1:
        raise MalformedMessage(f"From must hold exactly one mailbox, found {len(sender_list)}")
    # Message ids are read raw: the header registry's id parser is slow and we only need <...> tokens.
    raw_ids: dict[str, str] = {}
    for name, value in msg.raw_items():
        key = name.lower()
        if key in _ID_HEADERS and key not in raw_ids:
            raw_ids[key] = _undo_surrogateescape(str(value))
    return ParsedMessage(
        sender=sender_list[0],
        to=_all_mailboxes(msg, "To"),
        cc=_all_mailboxes(msg, "Cc"),
        subject=_text_header(msg, "Subject"),
        message_id=_first_msgid(raw_ids.get("message-id", "")),
        in_reply_to=_first_msgid(raw_ids.get("in-reply-to", "")),
        references=_MSGID.findall(raw_ids.get("references", "")),
        email=msg,
    )


def thread_root(parsed: ParsedMessage) -> str:
    """The Message-ID a message's thread starts from: first of References, else In-Reply-To, else its own."""
    root = (parsed.references[:1] or [parsed.in_reply_to or parsed.message_id or ""])[0]
    if not root:
        root = "subject:" + parsed.subject
    return "T" + hashlib.sha256(root.lower().encode("utf-8", "replace")).hexdigest()[:16]


def _mailboxes(header: object, name: str) -> list[Mailbox]:
    if not isinstance(header, AddressHeader):
        raise MalformedMessage(f"{name} header is not an address header")
    defects = getattr(header, "defects", ())  # on every header object; missing from typeshed
    if defects:
        raise MalformedMessage(f"{name} header is malformed: {defects[0]}")
    if any(group.display_name is not None for group in header.groups):
        raise MalformedMessage(f"{name} header holds a group, not a mailbox")
    if _encoded_word_in_address(getattr(header, "_parse_tree", None)):
        # RFC 2047 5(3): never inside an addr-spec. The email package decodes one there anyway,
        # so "boss@=?utf-8?q?acme.com?=" would read as boss@acme.com while no MUA shows that.
        raise MalformedMessage(f"{name} address holds an RFC 2047 encoded-word")
    out: list[Mailbox] = []
    for addr in header.addresses:
        out.append(_mailbox(addr, name))
    return out


def _encoded_word_in_address(token: object, inside: bool = False) -> bool:
    """Whether the email package's parse tree has an encoded-word inside an addr-spec."""
    kind = getattr(token, "token_type", None)
    if kind == "encoded-word" and inside:
        return True
    if not isinstance(token, list):
        return False
    inside = inside or kind == "addr-spec"
    return any(_encoded_word_in_address(child, inside) for child in token)


def _mailbox(addr: Address, name: str) -> Mailbox:
    if not addr.username or not addr.domain or "@" in addr.domain:
        raise MalformedMessage(f"{name} mailbox {addr.addr_spec!r} is not local@domain")
    return Mailbox(
        address=normalize_address(f"{addr.username}@{addr.domain}"),
        display_name=addr.display_name,
    )


def _all_mailboxes(msg: EmailMessage, name: str) -> list[Mailbox]:
    out: list[Mailbox] = []
    for header in msg.get_all(name) or []:
        try:
            out.extend(_mailboxes(header, name))
        except MalformedMessage:
            continue  # recipients are informational; only From must be strict
    return out


def _text_header(msg: EmailMessage, name: str) -> str:
    value = msg.get(name)
    return str(value) if value is not None else ""


def _undo_surrogateescape(value: str) -> str:
    """A raw header value with its 8-bit bytes read as UTF-8 (U+FFFD where they are not).

    The parser keeps such bytes as lone surrogates, which no UTF-8 encoder (the audit
    row's hash, the database, JSON payloads) accepts.
    """
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _first_msgid(value: str) -> str | None:
    found = _MSGID.search(value)
    return found.group(0) if found else None


_MSGID_HEADER = re.compile(rb"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def sniff_message_id(raw: bytes) -> str | None:
    """The Message-ID of a message too malformed to parse, read leniently for the audit row."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    found = _MSGID_HEADER.search(head)
    return found.group(1).decode("ascii", "replace") if found else None


def without_forged_trace(raw: bytes, authserv_id: str) -> bytes:
    """``raw`` without Authentication-Results claiming to be ours, and without X-Appliance-Decision.

    RFC 8601 section 5: a receiver removes (or renames) results bearing its own
    authserv-id before adding its own, so the agent can trust the ones it sees.
    Other bytes are left exactly as they were.
    """
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return raw
    fields: list[list[bytes]] = []  # each header field with its folded continuation lines
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    ours = authserv_id.lower().encode()
    kept = [f for f in fields if not _forged(b"\r\n".join(f), ours)]
    if len(kept) == len(fields):
        return raw
    return b"\r\n".join(line for f in kept for line in f) + sep + body


def _forged(field: bytes, ours: bytes) -> bool:
    name, colon, value = field.partition(b":")
    name = name.strip().lower()
    if not colon:
        return False
    if name == b"x-appliance-decision":
        return True
    return name == b"authentication-results" and value.split(b";", 1)[0].strip().lower() == ours
