"""Delivery status notifications for our own mail: RFC 3464 reports, read (pure, no I/O).

A DSN is a ``multipart/report; report-type=delivery-status`` (RFC 6522)
whose parts are a human-readable explanation, the machine-readable
``message/delivery-status`` (RFC 3464 2: a block of per-message fields, then
one block per recipient, separated by blank lines), and optionally the
original message or its headers (``message/rfc822``,
``text/rfc822-headers``). RFC 6533 adds the UTF-8 forms
``message/global-delivery-status`` and ``message/global-headers``; they are
read the same way.

What links a DSN to the message it reports on: the ``Original-Envelope-Id``
(the ENVID we gave in MAIL FROM, RFC 3461 4.4: our email id) when the
reporting MTA kept it, else the ``Message-ID`` of the returned headers.
"""

from __future__ import annotations

__all__ = ["DsnRecipient", "DsnReport", "parse_dsn"]

import email
import email.message
import email.parser
import email.policy
import re

import msgspec

_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_STATUS_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status"})
_RETURNED_PARTS = frozenset({"message/rfc822", "message/global"})
_RETURNED_HEADERS = frozenset({"text/rfc822-headers", "message/global-headers"})
_MAX_RECIPIENTS = 1000
"""Recipient blocks read at most (a report is small; a hostile one need not be read to its end)."""
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_SMTP_CODE = re.compile(r"^\s*([245]\d\d)[\s-]")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")


class DsnRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One per-recipient block (RFC 3464 2.3)."""

    final_recipient: str
    """The address the report is about (the ``rfc822;`` type stripped)."""
    original_recipient: str | None
    action: str
    """``failed``, ``delayed``, ``delivered``, ``relayed`` or ``expanded`` (lowercase)."""
    status: str
    """The enhanced status code, e.g. ``5.1.1`` (RFC 3463)."""
    diagnostic: str | None
    """The remote reply as reported (``Diagnostic-Code``, its ``smtp;`` type stripped)."""
    code: int | None
    """The SMTP reply code in the diagnostic, when it holds one."""
    remote_mta: str | None


class DsnReport(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery status notification, read."""

    reporting_mta: str | None
    envelope_id: str | None
    """``Original-Envelope-Id``, xtext-decoded: the ENVID we sent (our email id)."""
    message_id: str | None
    """``Message-ID`` of the returned message or headers (the message the report is about)."""
    recipients: list[DsnRecipient]

    @property
    def failed(self) -> list[DsnRecipient]:
        """Recipients the report says will not get the message (``Action: failed``)."""
        return [r for r in self.recipients if r.action == "failed"]


def parse_dsn(raw: bytes) -> DsnReport | None:
    """The report in ``raw``, or None when it is not an RFC 3464 DSN (or names no recipient)."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # the parser is lenient; anything it still cannot take is not a report
        return None
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "", header="content-type") or "").lower() not in _REPORT_TYPES:
        return None
    status_part = returned = None
    for part in message.walk():
        kind = part.get_content_type()
        if kind in _STATUS_PARTS and status_part is None:
            status_part = part
        elif kind in _RETURNED_PARTS | _RETURNED_HEADERS and returned is None:
            returned = part
    if status_part is None:
        return None
    blocks = _blocks(status_part)
    if len(blocks) < 2:  # the per-message block and at least one recipient (RFC 3464 2.1)
        return None
    head, rest = blocks[0], blocks[1:_MAX_RECIPIENTS + 1]
    recipients = [r for r in (_recipient(b) for b in rest) if r is not None]
    if not recipients:
        return None
    envelope_id = head.get("original-envelope-id")
    return DsnReport(
        reporting_mta=_typed(head.get("reporting-mta")),
        envelope_id=_XTEXT.sub(lambda m: chr(int(m.group(1), 16)), envelope_id) if envelope_id else None,
        message_id=_returned_message_id(returned),
        recipients=recipients,
    )


def _blocks(part: email.message.Message) -> list[dict[str, str]]:
    """The field blocks of a delivery-status part, each as {lowercased name: unfolded value}.

    Python's parser splits ``message/delivery-status`` into one Message per block; the
    ``global`` form (and a part it could not split) arrives as text to split here.
    """
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for item in payload:
            if isinstance(item, email.message.Message):
                block = _fields(item)
                if block:
                    blocks.append(block)
                body = item.get_payload()
                if isinstance(body, str) and body.strip():
                    blocks.extend(_split_blocks(body))
        return blocks
    data = part.get_payload(decode=True)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
    return _split_blocks(text)


def _split_blocks(text: str) -> list[dict[str, str]]:
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    chunks = re.split(r"\r?\n[ \t]*\r?\n", text.replace("\r\n", "\n").strip("\n"))
    return [b for b in (_fields(parser.parsestr(c.strip("\n") + "\n\n")) for c in chunks if c.strip()) if b]


def _fields(message: email.message.Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in message.items():
        fields.setdefault(name.lower(), " ".join(str(value).split()))
    return fields


def _recipient(block: dict[str, str]) -> DsnRecipient | None:
    final = _address(block.get("final-recipient"))
    action = block.get("action", "").split("(")[0].strip().lower()
    status = block.get("status", "").split()[0] if block.get("status", "").split() else ""
    if final is None or not action:
        return None
    diagnostic = _typed(block.get("diagnostic-code"))
    code = _SMTP_CODE.match(diagnostic) if diagnostic else None
    return DsnRecipient(final_recipient=final, original_recipient=_address(block.get("original-recipient")),
                        action=action, status=status if _STATUS.match(status) else "",
                        diagnostic=diagnostic, code=int(code.group(1)) if code else None,
                        remote_mta=_typed(block.get("remote-mta")))


def _typed(value: str | None) -> str | None:
    """``"smtp; 550 5.1.1 ..."`` or ``"dns; mx.example.net"``: the value without its type (RFC 3464 2.1.2)."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    text = rest.strip() if sep and " " not in kind.strip() else value.strip()
    return text or None


def _address(value: str | None) -> str | None:
    text = _typed(value)
    if text is None:
        return None
    return text.strip().strip("<>").strip() or None


def _returned_message_id(part: email.message.Message | None) -> str | None:
    if part is None:
        return None
    headers: email.message.Message | None = None
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        headers = payload[0]
    else:
        data = part.get_payload(decode=True)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload)
        headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text.lstrip("\r\n"))
    value = headers.get("message-id") if headers is not None else None
    if value is None:
        return None
    found = re.search(r"<[^<>\s]+>", str(value))
    return found.group(0) if found else None
