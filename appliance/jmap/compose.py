"""Email/set create (RFC 8621 4.6): an Email object → the message bytes it describes.

Header properties (the convenience ones and ``header:{name}:as{form}``) become
header fields, each value encoded for its form (RFC 2047 words for non-ASCII
text, addresses formatted, dates in RFC 5322 form). The body is either
``bodyStructure`` or ``textBody``/``htmlBody``/``attachments`` (RFC 8621
4.6's rules: at most one text/plain and one text/html body part, both
together are multipart/alternative, attachments make it multipart/mixed).
Text comes from ``bodyValues`` by ``partId``; any other content from a blob
by ``blobId``. A value that would inject a header (a bare line break) or a
property the client may not set is ``invalidProperties``.
"""

from __future__ import annotations

__all__ = ["Invalid", "compose", "needed_blobs"]

import email.policy
import email.utils
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from typing import Any

from appliance.jmap.mime import HEADER_FORMS, form_allowed, parse_utc

_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_BREAK = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")
_SERVER_SET = frozenset({"id", "blobId", "threadId", "size", "hasAttachment", "preview"})
_CONVENIENCE = {"messageId": ("Message-ID", "MessageIds"), "inReplyTo": ("In-Reply-To", "MessageIds"),
                "references": ("References", "MessageIds"), "sender": ("Sender", "Addresses"),
                "from": ("From", "Addresses"), "to": ("To", "Addresses"), "cc": ("Cc", "Addresses"),
                "bcc": ("Bcc", "Addresses"), "replyTo": ("Reply-To", "Addresses"), "subject": ("Subject", "Text"),
                "sentAt": ("Date", "Date")}
_BODY = frozenset({"bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"})
_META = frozenset({"mailboxIds", "keywords", "receivedAt"})
_PART_KEYS = frozenset({"partId", "blobId", "type", "charset", "disposition", "name", "cid", "language", "location",
                        "subParts", "size"})
_POLICY = email.policy.SMTP.clone(max_line_length=998)

BlobReader = Callable[[str], "tuple[bytes, str] | None"]


class Invalid(Exception):
    """A SetError for one creation: its type, the properties at fault, and why."""

    def __init__(self, type_: str, description: str, properties: list[str] | None = None) -> None:
        super().__init__(description)
        self.type = type_
        self.description = description
        self.properties = properties or []


def _header_property(prop: str) -> tuple[str, str, bool] | None:
    if not prop.startswith("header:"):
        return None
    parts = prop.split(":")
    if len(parts) < 2 or not _NAME.fullmatch(parts[1]):
        raise Invalid("invalidProperties", f"{prop}: not a header property", [prop])
    name, form, all_ = parts[1], "Raw", False
    rest = parts[2:]
    if rest and rest[0].startswith("as"):
        form = rest.pop(0)[2:]
    if rest and rest[0] == "all":
        all_ = True
        rest.pop(0)
    if rest or form not in HEADER_FORMS or not form_allowed(name, form):
        raise Invalid("invalidProperties", f"{prop}: not a header property", [prop])
    return name, form, all_


def _clean(value: str, prop: str) -> str:
    if _BREAK.search(value):
        raise Invalid("invalidProperties", f"{prop}: a line break in a header value", [prop])
    return value


def _text(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode(linesep="\r\n")


def _mailbox(item: Any, prop: str) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("email"), str) or not item["email"]:
        raise Invalid("invalidProperties", f"{prop}: EmailAddress objects expected", [prop])
    address = _clean(item["email"], prop)
    if any(c in address for c in "<>, \t\"") or address.count("@") != 1:
        raise Invalid("invalidProperties", f"{prop}: {address!r} is not an addr-spec", [prop])
    name = item.get("name")
    if name is None or name == "":
        return address
    if not isinstance(name, str):
        raise Invalid("invalidProperties", f"{prop}: a name is a string", [prop])
    name = _clean(name, prop)
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{Header(name, 'utf-8').encode()} <{address}>"


def _form_value(value: Any, form: str, prop: str) -> str:
    """A JSON value of ``form`` → the raw header value (without the leading space)."""
    if form == "Raw":
        if not isinstance(value, str):
            raise Invalid("invalidProperties", f"{prop}: a string expected", [prop])
        return _clean(value, prop).lstrip(" \t")
    if form == "Text":
        if not isinstance(value, str):
            raise Invalid("invalidProperties", f"{prop}: a string expected", [prop])
        return _text(_clean(value, prop))
    if form == "Addresses":
        if not isinstance(value, list):
            raise Invalid("invalidProperties", f"{prop}: a list of EmailAddress expected", [prop])
        return ", ".join(_mailbox(a, prop) for a in value)
    if form == "GroupedAddresses":
        if not isinstance(value, list):
            raise Invalid("invalidProperties", f"{prop}: a list of EmailAddressGroup expected", [prop])
        out = []
        for group in value:
            if not isinstance(group, dict) or not isinstance(group.get("addresses"), list):
                raise Invalid("invalidProperties", f"{prop}: EmailAddressGroup objects expected", [prop])
            members = ", ".join(_mailbox(a, prop) for a in group["addresses"])
            name = group.get("name")
            out.append(members if name is None else f"{_text(_clean(str(name), prop))}: {members};")
        return ", ".join(m for m in out if m)
    if form == "MessageIds":
        if not isinstance(value, list) or not all(isinstance(v, str) and v and not re.search(r"[<>\s]", v)
                                                  for v in value):
            raise Invalid("invalidProperties", f"{prop}: a list of message ids (without <>) expected", [prop])
        return " ".join(f"<{v}>" for v in value)
    if form == "Date":
        if not isinstance(value, str):
            raise Invalid("invalidProperties", f"{prop}: a Date expected", [prop])
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Invalid("invalidProperties", f"{prop}: a Date expected", [prop]) from None
        if moment.tzinfo is None:
            raise Invalid("invalidProperties", f"{prop}: a Date has a time zone", [prop])
        return email.utils.format_datetime(moment)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("invalidProperties", f"{prop}: a list of URLs expected", [prop])
    return ", ".join(f"<{_clean(v, prop)}>" for v in value)


def _headers(props: dict[str, Any], *, top: bool) -> list[tuple[str, str]]:
    """The header fields the object's properties ask for, in property order."""
    fields: list[tuple[str, str]] = []
    named: dict[str, str] = {}
    for prop, value in props.items():
        if top and prop in _CONVENIENCE:
            name, form = _CONVENIENCE[prop]
            all_ = False
        else:
            parsed = _header_property(prop)
            if parsed is None:
                continue
            name, form, all_ = parsed
            if top and name.lower().startswith("content-"):
                raise Invalid("invalidProperties", f"{prop}: Content-* fields are set on body parts", [prop])
        key = name.lower()
        if key in named:
            raise Invalid("invalidProperties", f"{prop} and {named[key]} both set {name}", [prop, named[key]])
        named[key] = prop
        if value is None:
            continue
        values = value if all_ else [value]
        if all_ and not isinstance(value, list):
            raise Invalid("invalidProperties", f"{prop}: a list expected", [prop])
        fields.extend((name, _form_value(v, form, prop)) for v in values)
    return fields


def needed_blobs(props: dict[str, Any]) -> list[str]:
    """The blob ids an Email to create takes its content from."""
    found: list[str] = []

    def visit(part: Any) -> None:
        if isinstance(part, dict):
            if isinstance(part.get("blobId"), str):
                found.append(part["blobId"])
            for sub in part.get("subParts") or []:
                visit(sub)

    for key in ("bodyStructure",):
        visit(props.get(key))
    for key in ("textBody", "htmlBody", "attachments"):
        for part in props.get(key) or []:
            visit(part)
    return found


class _Body:
    def __init__(self, values: dict[str, Any], blobs: BlobReader) -> None:
        self.values = values
        self.blobs = blobs
        self.used: set[str] = set()

    def part(self, spec: Any, where: str, *, want: str | None = None) -> EmailMessage:
        if not isinstance(spec, dict):
            raise Invalid("invalidProperties", f"{where}: an EmailBodyPart object expected", [where])
        unknown = [k for k in spec if k not in _PART_KEYS and not k.startswith("header:")]
        if unknown or "headers" in spec:
            raise Invalid("invalidProperties", f"{where}: cannot set {', '.join(unknown or ['headers'])}", [where])
        mime_type = spec.get("type")
        sub_parts = spec.get("subParts")
        part = EmailMessage(policy=_POLICY)
        if sub_parts is not None:
            if not isinstance(mime_type, str) or not mime_type.lower().startswith("multipart/") or not isinstance(
                    sub_parts, list):
                raise Invalid("invalidProperties", f"{where}: subParts need a multipart type", [where])
            part.set_type(mime_type.lower())
            for i, sub in enumerate(sub_parts):
                part.attach(self.part(sub, f"{where}/subParts/{i}"))
            self._fields(part, spec, where)
            return part
        part_id, blob_id = spec.get("partId"), spec.get("blobId")
        if (part_id is None) == (blob_id is None):
            raise Invalid("invalidProperties", f"{where}: exactly one of partId and blobId", [where])
        if part_id is not None:
            if spec.get("charset") is not None or spec.get("size") is not None:
                raise Invalid("invalidProperties", f"{where}: charset and size are the server's for a partId",
                              [where])
            mime_type = (mime_type or want or "text/plain").lower()
            if not mime_type.startswith("text/") or (want is not None and mime_type != want):
                raise Invalid("invalidProperties", f"{where}: a partId part must be {want or 'text/*'}", [where])
            value = self.values.get(part_id) if isinstance(part_id, str) else None
            if not isinstance(value, dict) or not isinstance(value.get("value"), str):
                raise Invalid("invalidProperties", f"{where}: no bodyValues entry for partId {part_id!r}",
                              ["bodyValues"])
            if value.get("isTruncated") or value.get("isEncodingProblem"):
                raise Invalid("invalidProperties", f"bodyValues/{part_id}: isTruncated and isEncodingProblem "
                                                   "must be false", ["bodyValues"])
            self.used.add(str(part_id))
            part.set_content(value["value"].replace("\r\n", "\n"), subtype=mime_type.split("/", 1)[1],
                             charset="utf-8")
        else:
            found = self.blobs(str(blob_id)) if isinstance(blob_id, str) else None
            if found is None:
                raise Invalid("blobNotFound", f"{where}: no blob {blob_id!r}", [where])
            data, blob_type = found
            mime_type = (mime_type or blob_type or "application/octet-stream").lower()
            if "/" not in mime_type:
                raise Invalid("invalidProperties", f"{where}: type is type/subtype", [where])
            maintype, subtype = mime_type.split("/", 1)
            if maintype == "text":
                charset = spec.get("charset") or "utf-8"
                try:
                    part.set_content(data.decode(charset), subtype=subtype, charset="utf-8")
                except (LookupError, UnicodeDecodeError):
                    part.set_content(data, maintype="application", subtype="octet-stream")
            elif maintype == "message" or maintype == "multipart":
                part.set_content(data, maintype="application", subtype="octet-stream")
                part.replace_header("Content-Type", mime_type)
            else:
                part.set_content(data, maintype=maintype, subtype=subtype)
        self._fields(part, spec, where)
        return part

    def _fields(self, part: EmailMessage, spec: dict[str, Any], where: str) -> None:
        disposition, name = spec.get("disposition"), spec.get("name")
        if disposition is not None or name is not None:
            if disposition is not None and not isinstance(disposition, str):
                raise Invalid("invalidProperties", f"{where}: disposition is a string", [where])
            params = {} if name is None else {"filename": _clean(str(name), where)}
            part.add_header("Content-Disposition", (disposition or "attachment").lower(), **params)
            if name is not None and part.get_content_maintype() != "multipart":
                part.set_param("name", str(name))
        for prop, header in (("cid", "Content-ID"), ("location", "Content-Location")):
            value = spec.get(prop)
            if value is not None:
                text = _clean(str(value), where)
                part[header] = f"<{text}>" if prop == "cid" else text
        language = spec.get("language")
        if language is not None:
            if not isinstance(language, list):
                raise Invalid("invalidProperties", f"{where}: language is a list", [where])
            part["Content-Language"] = ", ".join(_clean(str(v), where) for v in language)
        for name_, value in _headers(spec, top=False):
            if name_.lower() in ("content-type", "content-transfer-encoding"):
                raise Invalid("invalidProperties", f"{where}: {name_} is the server's to set", [where])
            part[name_] = value


def _alternative(text: EmailMessage | None, html: EmailMessage | None) -> EmailMessage | None:
    if text is not None and html is not None:
        both = EmailMessage(policy=_POLICY)
        both.set_type("multipart/alternative")
        both.attach(text)
        both.attach(html)
        return both
    return text or html


def compose(props: dict[str, Any], *, blobs: BlobReader, hostname: str, now: float) -> bytes:
    """The message bytes of an Email/set create object (``Invalid`` when it cannot be one)."""
    bad = sorted((set(props) & _SERVER_SET) | ({"headers"} & set(props)))
    if bad:
        raise Invalid("invalidProperties", "the server sets these (set header fields one by one)", bad)
    unknown = [p for p in props if p not in _CONVENIENCE and p not in _BODY and p not in _META
               and not p.startswith("header:")]
    if unknown:
        raise Invalid("invalidProperties", "unknown properties", unknown)
    fields = _headers(props, top=True)
    values = props.get("bodyValues") or {}
    if not isinstance(values, dict):
        raise Invalid("invalidProperties", "bodyValues is an object", ["bodyValues"])
    body = _Body(values, blobs)
    if "bodyStructure" in props:
        if any(k in props for k in ("textBody", "htmlBody", "attachments")):
            raise Invalid("invalidProperties", "bodyStructure, or textBody/htmlBody/attachments, not both",
                          ["bodyStructure"])
        root = body.part(props["bodyStructure"], "bodyStructure")
    else:
        text_parts, html_parts = props.get("textBody") or [], props.get("htmlBody") or []
        if not isinstance(text_parts, list) or len(text_parts) > 1:
            raise Invalid("invalidProperties", "textBody holds at most one part", ["textBody"])
        if not isinstance(html_parts, list) or len(html_parts) > 1:
            raise Invalid("invalidProperties", "htmlBody holds at most one part", ["htmlBody"])
        text = body.part(text_parts[0], "textBody/0", want="text/plain") if text_parts else None
        html = body.part(html_parts[0], "htmlBody/0", want="text/html") if html_parts else None
        main = _alternative(text, html)
        attachments = props.get("attachments") or []
        if not isinstance(attachments, list):
            raise Invalid("invalidProperties", "attachments is a list", ["attachments"])
        extra = [body.part(a, f"attachments/{i}") for i, a in enumerate(attachments)]
        if main is None:
            main = EmailMessage(policy=_POLICY)
            main.set_content("", charset="utf-8")
        if extra:
            mixed = EmailMessage(policy=_POLICY)
            mixed.set_type("multipart/mixed")
            mixed.attach(main)
            for part in extra:
                if part.get("Content-Disposition") is None:
                    part.add_header("Content-Disposition", "attachment")
                mixed.attach(part)
            main = mixed
        root = main
    unused = sorted(set(values) - body.used)
    if unused:
        raise Invalid("invalidProperties", f"bodyValues {', '.join(unused)} belong to no part", ["bodyValues"])
    names = {n.lower() for n, _ in fields}
    if "date" not in names:
        fields.append(("Date", email.utils.format_datetime(datetime.fromtimestamp(now, UTC))))
    if "message-id" not in names:
        fields.append(("Message-ID", f"<{secrets.token_hex(12)}@{hostname}>"))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields) + "MIME-Version: 1.0\r\n"
    return head.encode("utf-8") + root.as_bytes(policy=_POLICY)


def received_at(props: dict[str, Any], now: float) -> datetime:
    value = props.get("receivedAt")
    if value is None:
        return datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
    if not isinstance(value, str):
        raise Invalid("invalidProperties", "receivedAt is a UTCDate", ["receivedAt"])
    try:
        return parse_utc(value)
    except ValueError:
        raise Invalid("invalidProperties", "receivedAt is a UTCDate", ["receivedAt"]) from None
