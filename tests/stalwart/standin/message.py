"""Raw RFC 5322 messages as Stalwart hands them to hooks: header fields with their raw values
(leading space and trailing CRLF kept, folding included) and the body, byte for byte."""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

Header = tuple[str, str]


def split_message(raw: bytes) -> tuple[list[Header], bytes]:
    """Header fields ``(name, rawValue)`` in order, and the body (everything after the blank line)."""
    text = raw.decode("utf-8", "surrogateescape")
    headers: list[list[str]] = []
    position = 0
    while position < len(text):
        end = text.find("\n", position)
        line = text[position:] if end < 0 else text[position:end + 1]
        if line in ("\r\n", "\n"):
            position += len(line)
            break
        if line[:1] in (" ", "\t") and headers:
            headers[-1][1] += line
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append([name, value])
        else:  # not a header line: the body starts here (no blank line)
            break
        position += len(line)
    body = text[position:].encode("utf-8", "surrogateescape")
    return [(name, value) for name, value in headers], body


def join_message(headers: list[Header], body: bytes) -> bytes:
    """The raw message back from its parts: ``name:rawValue`` each, CRLF, body."""
    head = "".join(f"{name}:{value}" for name, value in headers)
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def header_values(headers: list[Header], name: str) -> list[str]:
    """Raw values of every field named ``name`` (case-insensitive)."""
    return [value for field, value in headers if field.lower() == name.lower()]


def as_text(raw_value: str) -> str:
    """JMAP ``asText``: unfolded, RFC 2047 decoded, outer whitespace trimmed."""
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", raw_value).strip()
    try:
        return str(make_header(decode_header(unfolded)))
    except (ValueError, LookupError):
        return unfolded


def as_addresses(raw_value: str | None) -> list[dict[str, Any]] | None:
    """JMAP ``asAddresses``: ``[{name, email}]``."""
    if raw_value is None:
        return None
    return [{"name": name or None, "email": address} for name, address in getaddresses([as_text(raw_value)])
            if address]


def as_message_ids(raw_value: str | None) -> list[str] | None:
    """JMAP ``asMessageIds``: ids without angle brackets."""
    if raw_value is None:
        return None
    return re.findall(r"<([^>]+)>", raw_value) or None


def as_date(raw_value: str | None) -> str | None:
    """JMAP ``asDate`` (UTC, Z form)."""
    if raw_value is None:
        return None
    try:
        return parsedate_to_datetime(as_text(raw_value)).isoformat().replace("+00:00", "Z")
    except (TypeError, ValueError):
        return None


def text_body(raw: bytes) -> str:
    """The first text/plain part, decoded (empty when there is none)."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    part = parsed.get_body(("plain",)) if hasattr(parsed, "get_body") else None
    if part is None:
        return ""
    try:
        return str(part.get_content())  # type: ignore[union-attr]
    except (LookupError, ValueError):
        return ""


def has_attachment(raw: bytes) -> bool:
    """Whether any part is an attachment."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return any(True for _ in parsed.iter_attachments()) if parsed.is_multipart() else False  # type: ignore[attr-defined]
