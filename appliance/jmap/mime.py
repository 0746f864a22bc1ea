"""Message bytes → what an RFC 8621 Email says about itself: header forms, parts, body values.

Pure (no I/O). ``summarize`` reads a message once, when it enters the JMAP
index, and keeps what listings need (header properties, the body structure
with each part's byte offsets, a preview, lowercased search text): an
Email/get of list properties never parses a message again. Body values,
``headers`` and ``header:`` properties read the stored bytes again, by the
offsets kept: a slice and a decode, not a parse.

The MIME walk is its own (byte offsets are what it is for): header fields
split leniently, multiparts split on their boundary lines (RFC 2046 5.1.1:
the line break before a delimiter belongs to it), parts numbered in document
order. Content-Type and Content-Disposition parameters (RFC 2231) are read by
the email package's header registry, the one the gate uses. Limits: at most
``max_parts`` parts and ``max_depth`` nested multiparts; deeper structure is
kept as an opaque leaf.
"""

from __future__ import annotations

__all__ = [
    "HEADER_FORMS",
    "Address",
    "BodyValue",
    "Field",
    "PartInfo",
    "Summary",
    "body_value",
    "decoded_part",
    "form_allowed",
    "header_fields",
    "header_value",
    "part_fields",
    "summarize",
    "utc_date",
]

import binascii
import codecs
import contextlib
import email.utils
import re
import unicodedata
from datetime import UTC, datetime
from email.headerregistry import AddressHeader, ContentDispositionHeader, ContentTypeHeader
from typing import Any, NamedTuple

import msgspec

from appliance.mail import POLICY, decode_words, html_to_text

HEADER_FORMS = ("Raw", "Text", "Addresses", "GroupedAddresses", "MessageIds", "Date", "URLs")

MAX_PARTS = 1_000
MAX_DEPTH = 50
PREVIEW_CHARS = 256
SEARCH_CHARS = 65_536
"""Lowercased body text kept for ``text`` and ``body`` filters, at most."""

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_MSGID = re.compile(r"<([^<>\s]+)>")
_URL = re.compile(r"<([^<>\s]+)>")
_SPACE = re.compile(r"\s+")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_INLINE_MEDIA = ("image/", "audio/", "video/")

# RFC 8621 4.1.2: the forms a header field defined in RFC 5322 or RFC 2369 may be asked for.
_ADDRESS_FIELDS = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-sender",
                             "resent-reply-to", "resent-to", "resent-cc", "resent-bcc"})
_ID_FIELDS = frozenset({"message-id", "in-reply-to", "references", "resent-message-id"})
_DATE_FIELDS = frozenset({"date", "resent-date"})
_URL_FIELDS = frozenset({"list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
                         "list-archive"})
_TEXT_FIELDS = frozenset({"subject", "comments", "keywords", "list-id"})
_RAW_ONLY = frozenset({"return-path", "received"})


def form_allowed(name: str, form: str) -> bool:
    """Whether ``header:{name}:as{form}`` may be asked for (any form of a field RFC 8621 does not list)."""
    key = name.lower()
    if form == "Raw":
        return True
    if key in _RAW_ONLY:
        return False
    if key in _ADDRESS_FIELDS:
        return form in ("Addresses", "GroupedAddresses")
    if key in _ID_FIELDS:
        return form == "MessageIds"
    if key in _DATE_FIELDS:
        return form == "Date"
    if key in _URL_FIELDS:
        return form == "URLs"
    if key in _TEXT_FIELDS:
        return form == "Text"
    return True


class Field(NamedTuple):
    """A header field as written: its name and raw value (after the colon, folds kept, no final CRLF)."""

    name: str
    value: bytes


def header_fields(raw: bytes, start: int = 0, end: int | None = None) -> tuple[list[Field], int]:
    """The header fields of the entity at ``raw[start:end]`` and the offset of its body.

    Lenient: a line that is not a field ends the header block there (it is body).
    """
    end = len(raw) if end is None else end
    fields: list[Field] = []
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl
        line = raw[pos:line_end]
        if line.endswith(b"\r"):
            line = line[:-1]
        following = end if nl < 0 else nl + 1
        if not line:
            return fields, following
        if line[:1] in (b" ", b"\t"):
            if fields:
                name, value = fields[-1]
                fields[-1] = Field(name, value + b"\r\n" + line)
                pos = following
                continue
            return fields, pos
        colon = line.find(b":")
        name_bytes = line[:colon].rstrip(b" \t") if colon > 0 else b""
        if not name_bytes or any(c < 33 or c > 126 for c in name_bytes):
            return fields, pos
        fields.append(Field(name_bytes.decode("ascii"), line[colon + 1:]))
        pos = following
    return fields, end


def _text(value: bytes) -> str:
    """A raw value unfolded and read as UTF-8 (RFC 6532), undecodable bytes replaced."""
    return _FOLD.sub(b"", value).decode("utf-8", "replace")


def _last(fields: list[Field], name: str) -> bytes | None:
    key = name.lower()
    for field in reversed(fields):
        if field.name.lower() == key:
            return field.value
    return None


# -- header forms (RFC 8621 4.1.2) -----------------------------------------------------------------


class Address(msgspec.Struct, frozen=True):
    """EmailAddress: ``name`` is the display name (null when none), ``email`` the addr-spec."""

    name: str | None
    email: str


def as_text(value: bytes) -> str:
    return unicodedata.normalize("NFC", decode_words(_text(value))).strip()


def _groups(value: bytes) -> list[tuple[str | None, list[Address]]]:
    text = _text(value).strip()
    if not text:
        return []
    try:
        header = POLICY.header_factory("to", text)
    except Exception:  # the email package has bugs on hostile input: fall back to the lenient splitter
        header = None
    out: list[tuple[str | None, list[Address]]] = []
    if isinstance(header, AddressHeader):
        for group in header.groups:
            addresses = [Address(name=unicodedata.normalize("NFC", a.display_name.strip()) or None,
                                 email=a.addr_spec) for a in group.addresses if a.addr_spec]
            out.append((group.display_name, addresses))
        return out
    pairs = email.utils.getaddresses([text])
    return [(None, [Address(name=decode_words(n).strip() or None, email=e) for n, e in pairs if e])]


def as_addresses(value: bytes) -> list[Address]:
    return [a for _, addresses in _groups(value) for a in addresses]


def as_grouped(value: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, addresses in _groups(value):
        if name is None and out and out[-1]["name"] is None:
            out[-1]["addresses"].extend(addresses)  # consecutive ungrouped mailboxes: one null group
        else:
            out.append({"name": name, "addresses": addresses})
    return out


def as_message_ids(value: bytes) -> list[str] | None:
    text = _text(value)
    ids = _MSGID.findall(text)
    if not ids or _MSGID.sub("", text).strip(" \t\r\n,"):
        return None  # RFC 8621: null when the value does not parse as msg-ids
    return ids


def utc_date(moment: datetime) -> str:
    """A UTCDate (RFC 8620 1.4): ``2024-01-02T03:04:05Z``, seconds fraction omitted when zero."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    text = moment.replace(tzinfo=None).isoformat()
    return text.split(".")[0] + "Z" if moment.microsecond == 0 else text + "Z"


def as_date(value: bytes) -> str | None:
    text = _text(value).strip()
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # -0000: the time is UTC, the zone unknown (RFC 5322 3.3)
        return utc_date(moment)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def as_urls(value: bytes) -> list[str] | None:
    text = _text(value)
    urls = _URL.findall(text)
    return urls or None


def header_value(value: bytes, form: str) -> Any:
    """One field's value in ``form`` (one of ``HEADER_FORMS``)."""
    if form == "Raw":
        return value.decode("utf-8", "replace")
    if form == "Text":
        return as_text(value)
    if form == "Addresses":
        return as_addresses(value)
    if form == "GroupedAddresses":
        return as_grouped(value)
    if form == "MessageIds":
        return as_message_ids(value)
    if form == "Date":
        return as_date(value)
    return as_urls(value)


# -- the body structure (RFC 8621 4.1.4) ----------------------------------------------------------


class PartInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One MIME entity: the EmailBodyPart properties, and where its bytes are."""

    part_id: str | None = None
    """Leaves are numbered "1", "2"... in document order; a multipart has none."""
    type: str
    charset: str | None = None
    disposition: str | None = None
    cid: str | None = None
    language: list[str] | None = None
    location: str | None = None
    name: str | None = None
    size: int = 0
    cte: str = ""
    header_start: int = 0
    header_end: int = 0
    body_start: int = 0
    body_end: int = 0
    sub_parts: list[PartInfo] | None = None


class _Walk:
    def __init__(self, raw: bytes, max_parts: int, max_depth: int) -> None:
        self.raw = raw
        self.parts = 0
        self.leaves = 0
        self.max_parts = max_parts
        self.max_depth = max_depth

    def entity(self, start: int, end: int, default_type: str, depth: int) -> PartInfo:
        self.parts += 1
        fields, body_start = header_fields(self.raw, start, end)
        ctype_raw = _last(fields, "content-type")
        mime_type, params = default_type, dict[str, str]()
        if ctype_raw is not None:
            mime_type, params = _content_type(ctype_raw, default_type)
        cte = (_text(_last(fields, "content-transfer-encoding") or b"").strip().lower())
        info = PartInfo(type=mime_type, cte=cte, header_start=start, header_end=body_start,
                        body_start=body_start, body_end=end)
        disposition_raw = _last(fields, "content-disposition")
        filename = None
        if disposition_raw is not None:
            info.disposition, filename = _disposition(disposition_raw)
        name = filename or params.get("name")
        info.name = unicodedata.normalize("NFC", decode_words(name)) if name else None
        if mime_type.startswith("text/"):
            info.charset = params.get("charset") or "us-ascii"
        elif ctype_raw is None:
            info.charset = "us-ascii" if mime_type == "text/plain" else None
        cid = _last(fields, "content-id")
        if cid is not None:
            info.cid = _text(cid).strip().strip("<>").strip() or None
        language = _last(fields, "content-language")
        if language is not None:
            info.language = [t for t in (s.strip() for s in _text(language).split(",")) if t] or None
        location = _last(fields, "content-location")
        if location is not None:
            info.location = _text(location).strip() or None
        boundary = params.get("boundary")
        if (mime_type.startswith("multipart/") and boundary and depth < self.max_depth
                and self.parts < self.max_parts):
            child_type = "message/rfc822" if mime_type == "multipart/digest" else "text/plain"
            info.sub_parts = []
            for s, e in split_multipart(self.raw, body_start, end, boundary.encode("utf-8", "replace")):
                if self.parts >= self.max_parts:
                    break
                info.sub_parts.append(self.entity(s, e, child_type, depth + 1))
            info.size = end - body_start
            info.charset = None
            return info
        if mime_type.startswith("multipart/"):
            info.type = "application/octet-stream"  # a multipart we do not open is offered as bytes
        self.leaves += 1
        info.part_id = str(self.leaves)
        info.size = len(decoded_part(self.raw, info)[0])
        return info


def _content_type(value: bytes, default_type: str) -> tuple[str, dict[str, str]]:
    try:
        header = POLICY.header_factory("content-type", _text(value))
    except Exception:
        return default_type, {}
    if not isinstance(header, ContentTypeHeader):  # pragma: no cover - the registry knows Content-Type
        return default_type, {}
    params = {str(k).lower(): str(v) for k, v in header.params.items()}
    mime_type = header.content_type.lower()
    if "/" not in mime_type or not mime_type.split("/")[0]:
        mime_type = default_type
    return mime_type, params


def _disposition(value: bytes) -> tuple[str | None, str | None]:
    try:
        header = POLICY.header_factory("content-disposition", _text(value))
    except Exception:
        return None, None
    if not isinstance(header, ContentDispositionHeader):  # pragma: no cover
        return None, None
    kind = (header.content_disposition or "").lower() or None
    filename = header.params.get("filename")
    return kind, str(filename) if filename else None


def split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The byte ranges of a multipart body's parts (RFC 2046 5.1.1); an unclosed last part runs to ``end``."""
    delimiter = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    current: int | None = None
    search = start
    while search < end:
        if search == start and raw.startswith(delimiter, start):
            at = start
        else:
            found = raw.find(b"\n" + delimiter, search, end)
            if found < 0:
                break
            at = found + 1
        after = at + len(delimiter)
        closing = raw.startswith(b"--", after)
        nl = raw.find(b"\n", after, end)
        line_end = end if nl < 0 else nl
        rest = raw[after + (2 if closing else 0):line_end].strip(b" \t\r")
        if rest:  # a longer word that starts like the boundary: not a delimiter line
            search = after
            continue
        if current is not None:
            stop = at - 1 if at > start else at  # the line break before the delimiter belongs to it
            if stop > current and raw[stop - 1:stop] == b"\r":
                stop -= 1
            ranges.append((current, max(current, stop)))
        if closing:
            return ranges
        current = min(line_end + 1, end)
        search = max(current - 1, start + 1)
    if current is not None:
        ranges.append((current, end))
    return ranges


def decoded_part(raw: bytes, part: PartInfo) -> tuple[bytes, bool]:
    """A leaf's bytes with its Content-Transfer-Encoding undone, and whether that went wrong."""
    chunk = raw[part.body_start:part.body_end]
    if part.cte == "base64":
        data = _B64_JUNK.sub(b"", chunk)
        cut = len(data) % 4
        problem = cut == 1
        if cut:
            data = data[:-cut] if cut == 1 else data + b"=" * (4 - cut)
        try:
            return binascii.a2b_base64(data), problem
        except binascii.Error:
            return b"", True
    if part.cte == "quoted-printable":
        return binascii.a2b_qp(chunk), False
    return chunk, False


def _codec(charset: str | None) -> str | None:
    if not charset:
        return "utf-8"
    name = charset.strip().strip('"').lower()
    if name in ("us-ascii", "ascii", "ansi_x3.4-1968", "utf8", "unicode-1-1-utf-8"):
        return "utf-8"  # mislabelled 8-bit text is nearly always UTF-8; ASCII reads the same
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def part_text(raw: bytes, part: PartInfo) -> tuple[str, bool]:
    """A text part decoded: transfer encoding, then charset (unknown: UTF-8 with replacement, a problem)."""
    data, problem = decoded_part(raw, part)
    codec = _codec(part.charset)
    if codec is None:
        return data.decode("utf-8", "replace"), True
    try:
        return data.decode(codec), problem
    except UnicodeDecodeError:
        if codec == "utf-8":
            try:
                return data.decode("cp1252"), problem
            except UnicodeDecodeError:
                pass
        return data.decode(codec, "replace"), True


class BodyValue(msgspec.Struct, frozen=True, rename="camel"):
    value: str
    is_encoding_problem: bool
    is_truncated: bool


def body_value(raw: bytes, part: PartInfo, max_bytes: int = 0) -> BodyValue:
    """RFC 8621 EmailBodyValue: the decoded text, line ends LF, cut to ``max_bytes`` of UTF-8 when above 0."""
    text, problem = part_text(raw, part)
    text = text.replace("\r\n", "\n")
    truncated = False
    if max_bytes and len(text.encode("utf-8")) > max_bytes:
        cut = text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")  # never inside a code point
        if part.type == "text/html" and cut.rfind("<") > cut.rfind(">"):
            cut = cut[:cut.rfind("<")]  # nor inside a tag
        text, truncated = cut, True
    return BodyValue(value=text, is_encoding_problem=problem, is_truncated=truncated)


def part_fields(raw: bytes, part: PartInfo) -> list[Field]:
    """The header fields of one part (the message's own for the root)."""
    return header_fields(raw, part.header_start, part.header_end)[0]


def leaves(part: PartInfo) -> list[PartInfo]:
    if part.sub_parts is None:
        return [part]
    return [leaf for sub in part.sub_parts for leaf in leaves(sub)]


def _classify(parts: list[PartInfo], multipart_type: str, in_alternative: bool, html_body: list[PartInfo] | None,
              text_body: list[PartInfo] | None, attachments: list[PartInfo]) -> None:
    """RFC 8621 4.1.4's parseStructure: which leaves are the text body, the HTML body, attachments."""
    text_length = len(text_body) if text_body is not None else -1
    html_length = len(html_body) if html_body is not None else -1
    for i, part in enumerate(parts):
        is_multipart = part.sub_parts is not None
        is_inline = (part.disposition != "attachment"
                     and (part.type in ("text/plain", "text/html") or part.type.startswith(_INLINE_MEDIA))
                     and (i == 0 or (multipart_type != "related"
                                     and (part.type.startswith(_INLINE_MEDIA) or not part.name))))
        if is_multipart:
            sub_type = part.type.split("/", 1)[1]
            _classify(part.sub_parts or [], sub_type, in_alternative or sub_type == "alternative",
                      html_body, text_body, attachments)
        elif is_inline:
            if multipart_type == "alternative":
                if part.type == "text/plain" and text_body is not None:
                    text_body.append(part)
                elif part.type == "text/html" and html_body is not None:
                    html_body.append(part)
                else:
                    attachments.append(part)
                continue
            if in_alternative:
                if part.type == "text/plain":
                    html_body = None
                if part.type == "text/html":
                    text_body = None
            if text_body is not None:
                text_body.append(part)
            if html_body is not None:
                html_body.append(part)
            if (text_body is None or html_body is None) and part.type.startswith(_INLINE_MEDIA):
                attachments.append(part)
        else:
            attachments.append(part)
    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        if text_length == len(text_body) and html_length != len(html_body):
            text_body.extend(html_body[html_length:])
        if html_length == len(html_body) and text_length != len(text_body):
            html_body.extend(text_body[text_length:])


class Summary(msgspec.Struct, kw_only=True):
    """What the index keeps of one message (the ``summary`` JSON), and the columns derived from it."""

    headers: dict[str, Any]
    """messageId, inReplyTo, references, sender, from, to, cc, bcc, replyTo, subject, sentAt (RFC 8621 names)."""
    structure: PartInfo
    text_body: list[str]
    html_body: list[str]
    attachments: list[str]
    has_attachment: bool
    preview: str
    search_body: str = ""
    header_text: str = ""
    header_names: list[str] = msgspec.field(default_factory=list)

    def part(self, part_id: str) -> PartInfo | None:
        for leaf in leaves(self.structure):
            if leaf.part_id == part_id:
                return leaf
        return None


_CONVENIENCE = (("messageId", "Message-ID", "MessageIds"), ("inReplyTo", "In-Reply-To", "MessageIds"),
                ("references", "References", "MessageIds"), ("sender", "Sender", "Addresses"),
                ("from", "From", "Addresses"), ("to", "To", "Addresses"), ("cc", "Cc", "Addresses"),
                ("bcc", "Bcc", "Addresses"), ("replyTo", "Reply-To", "Addresses"), ("subject", "Subject", "Text"),
                ("sentAt", "Date", "Date"))


def summarize(raw: bytes, *, max_parts: int = MAX_PARTS, max_depth: int = MAX_DEPTH) -> Summary:
    """Read ``raw`` once for the index. Never raises on hostile bytes: what cannot be read is left empty."""
    walk = _Walk(raw, max_parts, max_depth)
    root = walk.entity(0, len(raw), "text/plain", 0)
    fields = part_fields(raw, root)
    headers: dict[str, Any] = {}
    for prop, name, form in _CONVENIENCE:
        value = _last(fields, name)
        headers[prop] = None if value is None else header_value(value, form)
    text_body: list[PartInfo] = []
    html_body: list[PartInfo] = []
    attachments: list[PartInfo] = []
    _classify([root], "mixed", False, html_body, text_body, attachments)
    body_text = _body_text(raw, text_body)
    header_text = "\n" + "\n".join(f"{f.name.lower()}:{as_text(f.value).lower()}" for f in fields) + "\n"
    return Summary(
        headers=headers, structure=root,
        text_body=[p.part_id for p in text_body if p.part_id],
        html_body=[p.part_id for p in html_body if p.part_id],
        attachments=[p.part_id for p in attachments if p.part_id],
        has_attachment=any(p.disposition != "inline" for p in attachments),
        preview=_SPACE.sub(" ", body_text[:PREVIEW_CHARS * 4]).strip()[:PREVIEW_CHARS],
        search_body=body_text[:SEARCH_CHARS].lower(),
        header_text=header_text[:SEARCH_CHARS],
        header_names=sorted({f.name.lower() for f in fields}),
    )


def _body_text(raw: bytes, parts: list[PartInfo]) -> str:
    texts: list[str] = []
    size = 0
    for part in parts:
        if not part.type.startswith("text/"):
            continue
        text, _ = part_text(raw, part)
        if part.type == "text/html":
            with contextlib.suppress(Exception):  # markup beyond the reader's limits: searchable as markup
                text = html_to_text(text)
        texts.append(text)
        size += len(text)
        if size > SEARCH_CHARS:
            break
    return "\n".join(texts)


def subject_sort(subject: str) -> str:
    """The base subject (RFC 5256 2.1, approximately): reply and forward prefixes gone, lowercased."""
    return " ".join(_REPLY_PREFIX.sub("", subject).split()).lower()


def address_sort(addresses: list[Address] | None) -> str:
    """RFC 8621 sort by ``from``/``to``: the first address's name, else its email, lowercased."""
    if not addresses:
        return ""
    first = addresses[0]
    return (first.name or first.email).lower()


def address_search(addresses: list[Address] | None) -> str:
    return " ".join(f"{a.name or ''} <{a.email}>" for a in (addresses or [])).lower()


def parse_utc(value: str) -> datetime:
    """A UTCDate or Date string → naive UTC datetime; ValueError when it is not one."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return moment.astimezone(UTC).replace(tzinfo=None)
