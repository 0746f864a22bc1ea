"""Strict reading of an RFC 5322 message: the facts every later step relies on.

Step 1 of the gate. The From header must hold exactly one mailbox; a display
name is only ever a label, so ``"boss@acme.com" <evil@x.test>`` is from
``evil@x.test``. The parser reads the bytes ``mail.wire`` made canonical, the
same bytes DKIM verifies and the store keeps.
"""

from __future__ import annotations

__all__ = [
    "POLICY",
    "Mailbox",
    "ParsedMessage",
    "parse_message",
    "parse_tree",
    "sniff_message_id",
    "thread_root",
]

import email.parser
import email.policy
import functools
import hashlib
import re
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry
from email.message import EmailMessage

import msgspec

from appliance.errors import MalformedMessage, MessageTooComplex
from appliance.mail.address import ascii_domain, normalize_address
from appliance.mail.attachments import AttachmentInfo, list_attachments
from appliance.mail.wire import MessageBytes, read_message, split_header


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
_ID_HEADERS = ("message-id", "in-reply-to", "references")
_UNFOLD = re.compile(r"\r\n(?=[ \t])")
_TOLERATED_DEFECTS = frozenset({
    # RFC 6532 3.2: a UTF-8 local part is legal in internationalized mail.
    "local-part contains non-ASCII characters)",
    # An encoded-word inside a quoted display name breaks RFC 2047 5(3), yet common clients send
    # it; the display name is only ever a label, so reading it decoded changes no decision.
    "encoded word inside quoted string",
    "missing trailing whitespace after encoded-word",
})
SINGLE_INSTANCE = ("from", "sender", "reply-to", "to", "cc", "bcc", "message-id", "in-reply-to",
                   "references", "subject", "date")
"""RFC 5322 3.6: fields that may occur at most once. DKIM verifies a signed one from the bottom
(RFC 6376 5.4.2) while a reader shows the top: a second copy is how a signed header is spoofed."""


class Mailbox(msgspec.Struct, frozen=True, kw_only=True):
    """One mailbox of an address header."""

    address: str
    """The addr-spec, lowercased (local part and domain both: we match case-insensitively), its
    domain in A-labels (``boss@xn--bcher-kva.example`` for ``boss@bücher.example``)."""
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
    content_type: str
    """The top-level media type, lowercased (``text/plain`` when absent, RFC 2045 5.2)."""
    report_type: str
    """The ``report-type`` parameter of a multipart/report, lowercased; empty otherwise."""
    attachments: list[AttachmentInfo]
    """The parts the agent can download, numbered as ``attachment_part`` numbers them."""


def parse_message(message: MessageBytes | bytes) -> ParsedMessage:
    """Parse strictly; raise MalformedMessage saying what is wrong.

    Raw bytes are first read by ``read_message`` (which may also raise
    MessageTooLarge or MessageTooComplex for a header block over its limits).
    """
    return parse_tree(message)[0]


def parse_tree(message: MessageBytes | bytes) -> tuple[ParsedMessage, EmailMessage]:
    """``parse_message``, with the email package's tree of the message for content extraction."""
    if not isinstance(message, MessageBytes):
        message = read_message(message)
    _check_single_instances(message)
    try:
        return _parse(message)
    except MalformedMessage:
        raise
    except MemoryError:
        raise  # the reader process running this says what it means
    except RecursionError as exc:  # the email package recurses once per nested multipart
        raise MessageTooComplex("MIME structure is nested too deeply to read") from exc
    except Exception as exc:  # the email package has bugs on hostile input; refuse, never crash
        raise MalformedMessage(f"message could not be parsed: {type(exc).__name__}") from exc


def _check_single_instances(message: MessageBytes) -> None:
    """Duplicated single-instance fields are malformed in a signed message (RFC 5322 3.6)."""
    if not any(f.key == "dkim-signature" for f in message.fields):
        return  # From is checked below for every message; unsigned, nothing reads another copy
    seen: set[str] = set()
    for field in message.fields:
        key = field.key
        if key in SINGLE_INSTANCE:
            if key in seen:
                raise MalformedMessage(f"signed message has more than one {field.name} header "
                                       "(RFC 5322 3.6 allows one)")
            seen.add(key)


def _parse(message: MessageBytes) -> tuple[ParsedMessage, EmailMessage]:
    froms = message.get_all("From")
    if len(froms) != 1:
        raise MalformedMessage(f"expected exactly one From header, found {len(froms)}")
    sender_list = _mailboxes(_field_text(froms[0], "From", strict=True), "From")
    if len(sender_list) != 1:
        raise MalformedMessage(f"From must hold exactly one mailbox, found {len(sender_list)}")
    msg = _PARSER.parsebytes(message.data)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default always builds one
        raise MalformedMessage("message could not be parsed")
    # Message ids are read raw: the header registry's id parser is slow and we only need <...> tokens.
    raw_ids = {key: _field_text(values[0], key) for key in _ID_HEADERS if (values := message.get_all(key))}
    subjects = message.get_all("Subject")
    parsed = ParsedMessage(
        sender=sender_list[0],
        to=_all_mailboxes(message, "To"),
        cc=_all_mailboxes(message, "Cc"),
        subject=str(POLICY.header_factory("Subject", _field_text(subjects[0], "Subject"))) if subjects else "",
        message_id=_first_msgid(raw_ids.get("message-id", "")),
        in_reply_to=_first_msgid(raw_ids.get("in-reply-to", "")),
        references=_MSGID.findall(raw_ids.get("references", "")),
        content_type=msg.get_content_type().lower(),
        report_type=str(msg.get_param("report-type", "", header="content-type") or "").lower(),
        attachments=list_attachments(msg),
    )
    return parsed, msg


def _field_text(value: bytes, name: str, *, strict: bool = False) -> str:
    """A raw header value as text: UTF-8 (RFC 6532), unfolded (RFC 5322 2.2.3).

    ``strict``: bytes that are not UTF-8 make the message malformed (an address must be
    read one way only); elsewhere they read as U+FFFD.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        if strict:
            raise MalformedMessage(f"{name} header is not valid UTF-8 (RFC 6532) at byte {exc.start}") from exc
        text = value.decode("utf-8", "replace")
    return _UNFOLD.sub("", text).strip()


def thread_root(parsed: ParsedMessage) -> str:
    """The thread a message starts or names: first of References, else In-Reply-To, else its own id.

    The sender's address is part of it: anyone can write any Message-ID, so naming (or copying)
    another sender's id must not land a message in that sender's thread and spend its budget.
    The store joins messages of one conversation across senders (``store.resolve_thread``).
    """
    root = (parsed.references[:1] or [parsed.in_reply_to or parsed.message_id or ""])[0]
    if not root:
        root = "subject:" + parsed.subject
    key = f"{root.lower()}\n{parsed.sender.address}"
    return "T" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


def _mailboxes(value: str, name: str) -> list[Mailbox]:
    header = POLICY.header_factory(name, value)
    if not isinstance(header, AddressHeader):  # pragma: no cover - the registry knows address headers
        raise MalformedMessage(f"{name} header is not an address header")
    defects = [d for d in getattr(header, "defects", ()) if str(d) not in _TOLERATED_DEFECTS]
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
    try:
        domain = ascii_domain(addr.domain, strict=True)
    except ValueError as exc:
        raise MalformedMessage(f"{name} domain {addr.domain!r} is not a valid domain name: {exc}") from exc
    return Mailbox(
        address=normalize_address(f"{addr.username}@{domain}"),
        display_name=addr.display_name,
    )


def _all_mailboxes(message: MessageBytes, name: str) -> list[Mailbox]:
    out: list[Mailbox] = []
    for value in message.get_all(name):
        try:
            out.extend(_mailboxes(_field_text(value, name), name))
        except MalformedMessage:
            continue  # recipients are informational; only From must be strict
    return out


def _first_msgid(value: str) -> str | None:
    found = _MSGID.search(value)
    return found.group(0) if found else None


_MSGID_HEADER = re.compile(rb"^message-id:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


def sniff_message_id(raw: bytes) -> str | None:
    """The Message-ID of a message too malformed to parse, read leniently for the audit row."""
    head = split_header(raw)[0]
    found = _MSGID_HEADER.search(head)
    return found.group(1).decode("ascii", "replace") if found else None
