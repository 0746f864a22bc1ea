"""Message bytes, read once: the header/body split and the one rule for line endings.

Every component (the strict parser the gate uses, DKIM verification, the
stored and delivered copy) reads the bytes this module returns, so no two of
them can see a different message. Where readers could disagree, the message
is refused instead of guessed at:

- a bare CR anywhere (one reader sees a line break, another a character; a
  bare CR in the header block hides a header from DKIM), a NUL in the header;
- a header block that mixes CRLF and bare LF line ends.

A message written entirely with bare LF (``sendmail`` pipes, scripts) is read
as if every LF were CRLF, and so is a bare LF in the body of a CRLF message
(RFC 5321 2.3.8 lets a receiver fix line ends; every MTA does). The work a
header block can cost is bounded before any parser runs (``ReadingLimits``).
"""

from __future__ import annotations

__all__ = ["HeaderField", "MessageBytes", "ReadingLimits", "read_message", "split_header"]

import re

import msgspec

from appliance.errors import MalformedMessage, MessageTooComplex, MessageTooLarge

_BARE_CR = re.compile(rb"\r(?!\n)")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# RFC 5322 3.6.8: field-name is printable US-ASCII but colon; obs-optional allows WSP before the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*")


class ReadingLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How much structure a message may carry: its header before any parser reads it, its MIME tree."""

    max_header_bytes: int = 262_144
    """The header block, in bytes (Postfix's ``header_size_limit`` is 102,400)."""
    max_header_fields: int = 1_000
    """Header fields in the top-level header block."""
    max_header_line: int = 998
    """One physical header line, without its CRLF (RFC 5322 2.1.1: MUST be no more than 998)."""
    max_parts: int = 1_000
    """MIME parts, those of attached messages included (read by ``mail.text``)."""
    max_depth: int = 50
    """Nesting of multiparts and attached messages."""


class HeaderField(msgspec.Struct, frozen=True):
    """One header field as it stands in the bytes: its name and its raw value (folds and all)."""

    name: str
    """As written (ASCII), without trailing white space."""
    value: bytes
    """Everything after the colon, CRLFs of folded lines included, without the final CRLF."""
    start: int
    """Offset of the field in the message's bytes."""
    end: int
    """Offset just past the field's final CRLF."""

    @property
    def key(self) -> str:
        """The name lowercased: header names compare case-insensitively (RFC 5322 1.2.2)."""
        return self.name.lower()


class MessageBytes(msgspec.Struct, frozen=True, kw_only=True):
    """A message in its one canonical form: CRLF line ends, header fields split out."""

    data: bytes
    """The whole message, as every later component reads, stores and delivers it."""
    header_end: int
    """Offset of the body in ``data`` (just past the blank line; ``len(data)`` with no body)."""
    fields: list[HeaderField]

    @property
    def header(self) -> bytes:
        """The header block, with the CRLF of its last field but not the blank line."""
        head = self.data[: self.header_end]
        return head[:-2] if head.endswith(b"\r\n\r\n") else head

    @property
    def body(self) -> bytes:
        return self.data[self.header_end :]

    def get_all(self, name: str) -> list[bytes]:
        """Raw values of every field called ``name`` (any case), top to bottom."""
        key = name.lower()
        return [f.value for f in self.fields if f.key == key]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """Header block and body of possibly malformed bytes, for lenient uses (audit of a refusal).

    The split is the same as ``read_message``'s: at the first empty line, CRLF or LF.
    """
    found = _HEADER_END.search(raw)
    if found is None:
        return raw, b""
    return raw[: found.start()], raw[found.end() :]


def read_message(raw: bytes, limits: ReadingLimits | None = None) -> MessageBytes:
    """Read ``raw`` once; raise MalformedMessage, MessageTooLarge or MessageTooComplex saying why."""
    limits = limits or ReadingLimits()
    if b"\r" in raw and _BARE_CR.search(raw):
        at = _BARE_CR.search(raw)
        raise MalformedMessage(f"bare CR (not followed by LF) at byte {at.start() if at else 0}: "
                               "readers would disagree on where lines end")
    head_end = _header_end(raw)
    head = raw[:head_end]
    if len(head) > limits.max_header_bytes:
        raise MessageTooLarge(f"header block is over {limits.max_header_bytes} bytes")
    if raw.count(b"\n") != raw.count(b"\r\n"):  # counting is ~6x cheaper than searching for a bare LF
        lf_in_head = _BARE_LF.search(head) is not None
        if lf_in_head and b"\r\n" in head:
            raise MalformedMessage("header block mixes CRLF and bare LF line ends")
        raw = _BARE_LF.sub(b"\r\n", raw)
        head_end = _header_end(raw)
        head = raw[:head_end]
    nul = head.find(b"\0")
    if nul >= 0:
        raise MalformedMessage(f"NUL byte in the header block at byte {nul}")
    return MessageBytes(data=raw, header_end=head_end, fields=_fields(head, limits))


def _header_end(raw: bytes) -> int:
    """Offset of the body: past the first empty line (either line end), or the end of ``raw``."""
    if raw.startswith((b"\r\n", b"\n")):
        return 2 if raw.startswith(b"\r\n") else 1  # no header at all; the parser will say so
    found = _HEADER_END.search(raw)
    return found.end() if found else len(raw)


def _fields(head: bytes, limits: ReadingLimits) -> list[HeaderField]:
    fields: list[HeaderField] = []
    name = b""
    start = 0
    value: list[bytes] = []
    offset = 0
    for number, line in enumerate(head.split(b"\r\n"), 1):
        line_start, offset = offset, offset + len(line) + 2
        if not line:
            offset = line_start
            break  # the blank line ending the header block (or the end of a body-less message)
        if len(line) > limits.max_header_line:
            raise MalformedMessage(f"header line {number} is {len(line)} bytes long, over "
                                   f"{limits.max_header_line} (RFC 5322 2.1.1)")
        if line[:1] in (b" ", b"\t"):
            if not name:
                raise MalformedMessage("the header block starts with a continuation line")
            value.append(line)
            continue
        if name:
            fields.append(_field(name, value, start, line_start))
        colon = line.find(b":")
        if colon <= 0 or not _FIELD_NAME.fullmatch(line[:colon]):
            shown = line[:40].decode("ascii", "replace")
            raise MalformedMessage(f"header line {number} is not a header field: {shown!r}")
        if len(fields) >= limits.max_header_fields:
            raise MessageTooComplex(f"more than {limits.max_header_fields} header fields")
        name, start = line[:colon], line_start
        value = [line[colon + 1 :]]
    if name:
        fields.append(_field(name, value, start, min(offset, len(head))))
    return fields


def _field(name: bytes, value: list[bytes], start: int, end: int) -> HeaderField:
    return HeaderField(name.rstrip(b" \t").decode("ascii"), b"\r\n".join(value), start, end)
