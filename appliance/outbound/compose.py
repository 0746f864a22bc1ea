"""An agent's message as RFC 5322 bytes: headers, threading, MIME structure; unsigned.

``compose`` is pure (the random Message-ID aside, which a caller may pass in):
the send path checks the request with the outbound gate, composes, then signs
(``appliance.mailauth.signing``), which prepends its DKIM-Signature headers.

What it writes:

- ``From``: the agent's address with its display name (``[outbound] display_names``);
- ``To``/``Cc`` exactly as the caller resolved them (a reply's ``To`` starts with
  ``reply_target(...)``), domains in A-labels;
- ``Subject``; for a reply without one given, ``Re: `` and the parent's subject once;
- ``Date`` (RFC 5322 3.3), ``Message-ID`` ``<random@hostname>`` (3.6.4);
- a reply's ``In-Reply-To`` (the parent's Message-ID) and ``References`` (the
  parent's chain and its Message-ID, bounded: ``outbound.threading``);
- ``Auto-Submitted`` (RFC 3834 5): ``auto-replied`` for a reply, ``auto-generated``
  for new mail, so other responders do not answer it (no mail loops);
- the body: text/plain (UTF-8), with HTML a multipart/alternative, with
  attachments a multipart/mixed; names RFC 2231-encoded when not ASCII.

Bytes are CRLF throughout with no line over 998 octets (RFC 5322 2.1.1).
Bodies are 7bit when they are ASCII, else quoted-printable (or base64 for
mostly non-Latin text), never 8bit: a relay without 8BITMIME would re-encode
an 8bit body and so break the DKIM signature. Headers are ASCII (RFC 2047
encoded words) unless an address has a non-ASCII local part, which only
SMTPUTF8 can carry (RFC 6531, RFC 6532); the message is then written in UTF-8.
"""

from __future__ import annotations

__all__ = ["MAX_LINE", "Attachment", "Draft", "compose", "display_name", "new_message_id", "reply_target"]

import email.policy
import email.utils
import hashlib
import re
import secrets
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import msgspec

from appliance.config import ApplianceConfig
from appliance.mail import ParsedMessage, ascii_domain, normalize_address
from appliance.outbound.model import OutboundMessage
from appliance.outbound.threading import message_ids, references_for_reply, reply_subject, reply_target

MAX_LINE = 998
"""RFC 5322 2.1.1: each line MUST be no more than 998 characters, excluding the CRLF."""

_DOT_ATOM_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~"
                             r"\u0080-\U0010ffff-]+)*")
"""RFC 5322 3.4.1 dot-atom local part (RFC 6532 3.2 adds UTF-8); quoted local parts are not written."""
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
"""A host name label (RFC 1123 2.1), in A-label form."""
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
"""RFC 6838 4.2 type/subtype names."""


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """A file to attach, read from the blob store by the caller."""

    filename: str
    content_type: str = "application/octet-stream"
    data: bytes


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent asked to send, resolved: recipients final, attachments read."""

    agent: str
    """The agent's own address: the From and the envelope sender."""
    to: list[str]
    """Bare addresses; a reply's first is ``reply_target(parent From, parent Reply-To)``."""
    cc: list[str] = msgspec.field(default_factory=list)
    subject: str | None = None
    """New mail: required. A reply: ``Re: `` + the parent's subject when None."""
    text: str
    html: str | None = None
    attachments: list[Attachment] = msgspec.field(default_factory=list)


def display_name(config: ApplianceConfig, agent: str) -> str:
    """The agent's display name from ``[outbound] display_names`` (address compared case-insensitively)."""
    wanted = normalize_address(agent)
    for address, name in config.outbound.display_names.items():
        if normalize_address(address) == wanted:
            return " ".join(name.split())
    return ""


def new_message_id(hostname: str) -> str:
    """``<128 random bits in hex@hostname>``: unique without a clock or a counter (RFC 5322 3.6.4)."""
    return f"<{secrets.token_hex(16)}@{ascii_domain(hostname) or 'localhost'}>"


def _address(field: str, value: str, name: str = "") -> Address:
    """``value`` as a mailbox to write; ValueError naming the field and the value when it is not one."""
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if (not at or not _DOT_ATOM_LOCAL.fullmatch(local) or len(local) > 64  # RFC 5321 4.5.3.1.1
            or any(c.isspace() or not c.isprintable() for c in local)):
        raise ValueError(f"{field}: expected a bare address local@domain, got {value!r}")
    try:
        domain = ascii_domain(domain, strict=True)
    except ValueError as exc:
        raise ValueError(f"{field}: {value!r} has an invalid domain: {exc}") from None
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        raise ValueError(f"{field}: {value!r} has an invalid domain (letters, digits and '-' in dot-separated labels)")
    return Address(display_name=name, username=local, domain=domain)


def _single_line(text: str) -> str:
    """A header's text on one line: white space (line breaks included) collapsed, so no header
    can be injected; the email package folds it again."""
    return " ".join(text.split())


def _encoded(text: str) -> tuple[str, str]:
    """The text with LF line ends, and the transfer encoding to write it in."""
    lines = text.splitlines()
    if text.isascii() and all(len(line) <= MAX_LINE for line in lines):
        cte = "7bit"
    else:
        # Base64 is smaller for text mostly outside Latin script (each such character is 2-4
        # UTF-8 bytes, 6-12 quoted-printable characters); quoted-printable stays readable otherwise.
        wide = sum(1 for c in text if ord(c) > 0x7F)
        cte = "base64" if wide * 3 > len(text) else "quoted-printable"
    return "\n".join(lines) + "\n", cte


def _filename(value: str) -> str:
    """A file name to write: no directories, no control characters, not empty."""
    name = value.replace("\\", "/").rsplit("/", 1)[-1]
    name = _single_line("".join(c for c in name if c.isprintable()))
    return name.strip(". ") or "attachment"


def _attach(message: EmailMessage, attachment: Attachment) -> None:
    media = attachment.content_type.split(";", 1)[0].strip().lower()
    # message/* and multipart/* may not be base64-encoded (RFC 2046 5.2.1, 5.1), and the bytes are
    # not checked to be a message: sent as an opaque file.
    if not _MEDIA_TYPE.fullmatch(media) or media.startswith(("message/", "multipart/")):
        media = "application/octet-stream"
    maintype, subtype = media.split("/")
    # RFC 2231 for a non-ASCII name (filename*=utf-8''...), as the email package writes it.
    message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                           filename=_filename(attachment.filename))


def compose(draft: Draft, *, config: ApplianceConfig, email_id: str, thread_id: str, now: float,
            parent: ParsedMessage | None = None, message_id: str | None = None) -> OutboundMessage:
    """The unsigned message for ``draft``: a reply to ``parent`` when given, else new mail.

    Raises ValueError naming the field for an address that cannot be written, or
    new mail without a subject.
    """
    sender = _address("agent", draft.agent, display_name(config, draft.agent))
    to = [_address(f"to[{i}]", a) for i, a in enumerate(draft.to)]
    cc = [_address(f"cc[{i}]", a) for i, a in enumerate(draft.cc)]
    if draft.subject is not None:
        subject = _single_line(draft.subject)
    elif parent is not None:
        subject = reply_subject(parent.subject)
    else:
        raise ValueError("subject: new mail needs a subject")
    message_id = message_id or new_message_id(config.hostname)

    utf8 = any(not a.username.isascii() for a in (sender, *to, *cc))
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    message = EmailMessage(policy=policy)
    message["From"] = sender
    if to:
        message["To"] = to
    if cc:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = message_id
    in_reply_to = None
    if parent is not None:
        references = references_for_reply(parent.message_id, parent.references, parent.in_reply_to)
        in_reply_to = next(iter(message_ids(parent.message_id)), None)
        if in_reply_to is not None:
            message["In-Reply-To"] = in_reply_to
        if references:
            message["References"] = " ".join(references)  # folded between ids at 78 columns
    message["Auto-Submitted"] = "auto-replied" if parent is not None else "auto-generated"
    message["MIME-Version"] = "1.0"

    text, cte = _encoded(draft.text)
    message.set_content(text, subtype="plain", charset="utf-8", cte=cte)
    if draft.html is not None:
        html, cte = _encoded(draft.html)
        message.add_alternative(html, subtype="html", charset="utf-8", cte=cte)
    for attachment in draft.attachments:
        _attach(message, attachment)
    for part in message.walk():
        if part is not message:
            del part["MIME-Version"]  # the email package writes it on every part; it belongs at the top only

    raw = message.as_bytes(policy=policy)
    for number, line in enumerate(raw.split(b"\r\n"), 1):
        if len(line) > MAX_LINE:  # pragma: no cover - every body is encoded; a guard against a header surprise
            raise ValueError(f"line {number} is {len(line)} octets, over {MAX_LINE} (RFC 5322 2.1.1)")
    body = raw[raw.index(b"\r\n\r\n") + 4:]
    recipients = list(dict.fromkeys(a.addr_spec for a in (*to, *cc)))
    return OutboundMessage(
        email_id=email_id,
        agent=normalize_address(draft.agent),
        thread_id=thread_id,
        message_id=message_id,
        mail_from=sender.addr_spec,
        recipients=recipients,
        subject=subject,
        in_reply_to=in_reply_to,
        raw=raw,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )
