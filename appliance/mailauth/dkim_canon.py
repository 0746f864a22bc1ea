"""DKIM canonicalization (RFC 6376 3.4) and the header hash input (RFC 6376 3.7), on bytes in C.

Input is a message in canonical CRLF form (``appliance.mail.wire``): every CR
is followed by LF and every LF preceded by CR, so a line end is always CRLF
and bytes operations (``replace``, ``rstrip``, one literal-prefixed regex) do
the work that a line-by-line loop would do in Python.

The results are those of dkimpy, our reference, including where it reads the
RFC narrowly: relaxed header values are stripped of all ASCII white space at
their ends, the signature header's own value is hashed ``rstrip``-ed for both
canonicalizations, and a relaxed body whose last line has no CRLF keeps that
line's trailing white space (its CRLF is added after the white space is
reduced). SMTP always delivers a final CRLF, so the last quirk never shows
on mail that arrived by SMTP.
"""

from __future__ import annotations

__all__ = [
    "CanonicalBody",
    "canonical_body",
    "canonicalize_body",
    "header_hash_input",
    "signed_field_names",
    "without_b_value",
]

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.mail.wire import HeaderField

_CRLF = b"\r\n"
_SPACES = re.compile(rb"  +")  # literal prefix: the regex engine skips ahead with a fast search
_SPACE_PAIR = re.compile(rb" [ \r]")  # a run of SP, or SP before a line end
_SPACE_CR = re.compile(rb" \r")  # in CRLF bytes, SP before a line end
_WSP_RUN = re.compile(rb"[\t ]+")
_SPLIT_H = re.compile(rb"\s*:\s*")
# The b= tag and its value (base64 and folding white space), as dkimpy finds it: its pattern
# ``[;\s]b FWS = (FWS [base64])* (\r?\n\Z)?`` with FWS written as the \s* it amounts to.
_B_TAG = re.compile(rb"([;\s]b\s*=)([\sa-zA-Z0-9+/=]*)")
_WHITE = b" \t\r\n\x0b\x0c"  # what \s matches in a bytes pattern


@dataclass(frozen=True, slots=True)
class CanonicalBody:
    """A canonical body without copying it: ``data[:length] + suffix``."""

    data: bytes
    length: int
    suffix: bytes

    def __len__(self) -> int:
        return self.length + len(self.suffix)

    def digest(self, hash_name: str, limit: int | None = None) -> bytes:
        """The hash of the canonical body, or of its first ``limit`` bytes (``l=``)."""
        hasher = hashlib.new(hash_name)
        view = memoryview(self.data)[: self.length]
        if limit is None:
            hasher.update(view)
            hasher.update(self.suffix)
        else:
            hasher.update(view[:limit])
            hasher.update(self.suffix[: max(0, limit - self.length)])
        return hasher.digest()

    def __bytes__(self) -> bytes:
        return self.data[: self.length] + self.suffix


def _content_length(body: bytes) -> int:
    """Length of ``body`` without its trailing CRLFs (in canonical bytes, a tail of CR and LF)."""
    tail = body[-256:]
    kept = tail.rstrip(_CRLF)
    if not kept and len(body) > len(tail):
        return len(body.rstrip(_CRLF))  # more than 128 empty lines at the end: copy once
    return len(body) - len(tail) + len(kept)


def canonical_body(body: bytes, relaxed: bool) -> CanonicalBody:
    """The canonical body (RFC 6376 3.4.3 simple, 3.4.4 relaxed) of a CRLF body."""
    if relaxed:
        # Reduce every run of WSP to one SP: tabs first, then runs of spaces.
        if b"\t" in body:
            body = body.replace(b"\t", b" ")
        # One scan for either change (a regex with a one-byte literal prefix beats two
        # two-byte ``in`` scans on bodies without them, such as base64 parts).
        if _SPACE_PAIR.search(body) is not None:
            body = _SPACES.sub(b" ", body)
            # WSP at the end of a line is now one SP at most (no SP can precede it): remove it.
            if _SPACE_CR.search(body) is not None:
                body = body.replace(b" \r\n", _CRLF)
    # Ignore the empty lines at the end.
    length = _content_length(body)
    if not length and relaxed:
        return CanonicalBody(body, 0, b"")  # an empty body (or one of empty lines) is empty...
    return CanonicalBody(body, length, _CRLF)  # ...one CRLF in simple, as is a missing final CRLF


def canonicalize_body(body: bytes, relaxed: bool) -> bytes:
    """``canonical_body`` as bytes."""
    return bytes(canonical_body(body, relaxed))


def signed_field_names(h_value: bytes, extra_from: bool = True) -> list[bytes]:
    """The lowercased names of an ``h=`` tag, in order.

    With ``extra_from`` (dkimpy's rule, after its bug 644046), ``from`` is
    appended once more when listed: a second From header field added above the
    signed one is then part of the hash, so the signature breaks instead of
    vouching for a message with two authors.
    """
    names = [name.strip().lower() for name in _SPLIT_H.split(h_value)]
    if extra_from and b"from" in names:
        names.append(b"from")
    return names


def without_b_value(value: bytes) -> bytes:
    """The DKIM-Signature value with the ``b=`` value emptied (RFC 6376 3.7), as dkimpy does it.

    The white space after the last base64 character stays, but a final CRLF
    ending the value right after the base64 goes with it.
    """

    def empty(match: re.Match[bytes]) -> bytes:
        run = match[2]
        tail = run[len(run.rstrip(_WHITE)) :]
        if match.end() == len(value) and tail in (b"\r\n", b"\n"):
            tail = b""
        return match[1] + tail

    return _B_TAG.sub(empty, value)


def _field_bytes(data: bytes, field: HeaderField) -> bytes:
    raw = data[field.start : field.end]
    return raw if raw.endswith(_CRLF) else raw + _CRLF


def _relaxed_value(value: bytes) -> bytes:
    """RFC 6376 3.4.2: unfold, reduce WSP runs to one SP, strip the ends."""
    value = value.replace(_CRLF, b"")
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    return value.strip()


def header_hash_input(data: bytes, fields: Sequence[HeaderField], names: Sequence[bytes],
                      signature: HeaderField, relaxed: bool) -> bytes:
    """RFC 6376 3.7: the bytes the header hash covers.

    ``names`` are the ``h=`` names (lowercased), each picking the lowest
    instance of that name not picked yet; a name with no instance left adds
    nothing. Then the DKIM-Signature field itself, its ``b=`` value emptied,
    without its final CRLF. ``data`` holds the header block the fields'
    offsets point into.
    """
    positions: dict[str, list[int]] = {}
    for index, field in enumerate(fields):
        positions.setdefault(field.key, []).append(index)
    parts: list[bytes] = []
    for name in names:
        remaining = positions.get(name.decode("ascii", "replace"))
        if not remaining:
            continue
        field = fields[remaining.pop()]
        if relaxed:
            parts += (field.key.encode("ascii"), b":", _relaxed_value(field.value), _CRLF)
        else:
            parts.append(_field_bytes(data, field))
    raw = _field_bytes(data, signature)
    colon = raw.index(b":")
    value = without_b_value(raw[colon + 1 :])
    if relaxed:
        parts += (signature.key.encode("ascii"), b":", _relaxed_value(value))
    else:
        parts += (raw[:colon], b":", value.rstrip())
    return b"".join(parts)
