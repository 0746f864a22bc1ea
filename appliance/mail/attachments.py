"""The parts of a message an agent can download, numbered one way everywhere."""

from __future__ import annotations

__all__ = ["AttachmentInfo", "attachment_part", "list_attachments"]

from email.message import EmailMessage

import msgspec


class AttachmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One downloadable part: its number, the name its sender gave it, its type and decoded size."""

    index: int
    filename: str | None
    content_type: str
    size: int


def _parts(msg: EmailMessage) -> list[EmailMessage]:
    try:
        return [p for p in msg.iter_attachments() if isinstance(p, EmailMessage)]
    except Exception:  # the email package has bugs on hostile structures; nothing to offer then
        return []


def _decoded(part: EmailMessage) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return b""
    return payload if isinstance(payload, bytes) else b""


def _filename(part: EmailMessage) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return str(name) if name is not None else None


def list_attachments(msg: EmailMessage) -> list[AttachmentInfo]:
    """The message's attachments in the email package's ``iter_attachments`` order."""
    return [AttachmentInfo(index=index, filename=_filename(part), content_type=part.get_content_type(),
                           size=len(_decoded(part)))
            for index, part in enumerate(_parts(msg))]


def attachment_part(msg: EmailMessage, index: int) -> tuple[AttachmentInfo, bytes] | None:
    """Attachment ``index`` with its decoded bytes, or None when there is no such attachment."""
    parts = _parts(msg)
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    data = _decoded(part)
    return AttachmentInfo(index=index, filename=_filename(part), content_type=part.get_content_type(),
                          size=len(data)), data
