"""DKIM signing (RFC 6376 5, RFC 8463): one DKIM-Signature per key, prepended to the message.

Every signature is ``c=relaxed/relaxed`` (survives the re-folding and white
space changes relays make), carries ``t=`` (the signing time), and covers the
headers that say who wrote what to whom, and in reply to what: From, To, Cc,
Subject, Date, Message-ID, In-Reply-To, References, Reply-To, MIME-Version,
Content-Type and Auto-Submitted. Each is listed once more than it occurs
(RFC 6376 8.15, "oversigning"; a header that is absent is listed once), so a
copy added anywhere, above or below, is part of the hash and breaks the
signature instead of being shown to the reader as the signed one.

Canonicalization and the header hash input are the verifier's own
(``dkim_canon``): what we sign is byte for byte what ``verify_dkim`` and
dkimpy recompute. Pure: the keys come in as ``SigningKey``\\s, the clock as
``now``.
"""

from __future__ import annotations

__all__ = ["SIGNED_HEADERS", "sign", "signed_names"]

import base64
import functools
import hashlib
import sys
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from appliance.mail.wire import HeaderField, ReadingLimits, read_message
from appliance.mailauth.dkim_canon import canonical_body, header_hash_input
from appliance.mailauth.keys import SigningKey, valid_domain

SIGNED_HEADERS = ("from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "reply-to",
                  "mime-version", "content-type", "auto-submitted")
"""The header fields every signature covers (RFC 6376 5.4.1 recommends From, Subject, Date, the
address and threading fields and the MIME fields), each oversigned."""

_WIDTH = 76
"""Lines of the DKIM-Signature field are folded before this column (RFC 5322 2.1.1 asks for 78)."""
_UNBOUNDED = ReadingLimits(max_header_bytes=sys.maxsize, max_header_fields=sys.maxsize, max_header_line=sys.maxsize)
"""Our own composed message: the header limits guard the gate, not the signer."""


def signed_names(fields: Sequence[HeaderField]) -> list[str]:
    """The ``h=`` list for a header block: each of ``SIGNED_HEADERS`` once per occurrence, plus once.

    RFC 6376 5.4.2: a name listed more often than it occurs signs the absence
    of a further instance, so a verifier hashes the added copy too.
    """
    counts: dict[str, int] = {}
    for field in fields:
        counts[field.key] = counts.get(field.key, 0) + 1
    return [name for name in SIGNED_HEADERS for _ in range(counts.get(name, 0) + 1)]


@functools.lru_cache(maxsize=16)
def _private_key(pem: bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """Parsed once per key (parsing an RSA key costs more than signing with it)."""
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"a {type(private).__name__} cannot sign DKIM (RSA or ed25519 only)")
    return private


def _fold(tags: list[tuple[str, str]]) -> str:
    """The ``tag=value;`` list as a folded field value (starting with its space after the colon).

    Lines break between tags and, in ``h=``, before a colon; ``b=`` comes last and
    empty: its value is added once it is known (``_with_signature``).
    """
    atoms: list[tuple[str, bool]] = []  # (text, preceded by a space when on the same line)
    for index, (tag, value) in enumerate(tags):
        end = "" if index == len(tags) - 1 else ";"
        if tag == "h":
            first, *rest = value.split(":")
            pieces = [f"h={first}", *(f":{name}" for name in rest)]
            pieces[-1] += end
            atoms += [(pieces[0], True), *((piece, False) for piece in pieces[1:])]
        else:
            atoms.append((f"{tag}={value}{end}", True))
    lines: list[str] = []
    line, column = "", len("DKIM-Signature:")
    for text, spaced in atoms:
        joined = (" " if spaced else "") + text
        if line and column + len(joined) > _WIDTH:
            lines.append(line)
            line, column = " " + text, 1 + len(text)
        else:
            line, column = line + joined, column + len(joined)
    return "\r\n".join([*lines, line])


def _with_signature(value_without_b: str, signature: bytes) -> str:
    """The field value with ``b=`` filled in, its base64 folded over lines of ``_WIDTH``.

    Folding white space inside ``b=`` is ignored by verifiers (RFC 6376 3.5), and
    the text signed ends at ``b=``, so the folds change nothing that was signed.
    """
    encoded = base64.b64encode(signature).decode("ascii")
    lines = value_without_b.split("\r\n")
    column = len(lines[-1]) + (len("DKIM-Signature:") if len(lines) == 1 else 0)
    first = max(0, _WIDTH - column)
    chunks = [encoded[:first], *(encoded[i:i + _WIDTH - 1] for i in range(first, len(encoded), _WIDTH - 1))]
    return value_without_b + chunks[0] + "".join(f"\r\n {chunk}" for chunk in chunks[1:])


def _sign_input(key: SigningKey, header_input: bytes) -> bytes:
    private = _private_key(key.pem)
    if key.algorithm == "ed25519-sha256":
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ValueError(f"selector {key.selector}: an ed25519-sha256 key must be ed25519")
        # RFC 8463 3: Ed25519 (PureEdDSA) over the SHA-256 hash of the header hash input.
        return private.sign(hashlib.sha256(header_input).digest())
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"selector {key.selector}: an rsa-sha256 key must be RSA")
    return private.sign(header_input, padding.PKCS1v15(), hashes.SHA256())  # RFC 6376 3.3.1


def sign(raw: bytes, *, domain: str, keys: list[SigningKey], now: float) -> bytes:
    """``raw`` (in canonical CRLF form) with one DKIM-Signature per key prepended, in key order.

    Each signature covers the message as it was given (none signs another's
    DKIM-Signature), so they verify independently. With no keys the message
    is returned unchanged. ValueError for a domain that is not a domain name.
    """
    message = read_message(raw, _UNBOUNDED)
    if not keys:
        return message.data
    d = valid_domain(domain)
    header = message.header + b"\r\n"
    names = signed_names(message.fields)
    body_hash = base64.b64encode(canonical_body(message.body, relaxed=True).digest("sha256")).decode("ascii")
    signatures: list[bytes] = []
    for key in keys:
        tags = [("v", "1"), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", d), ("s", key.selector),
                ("t", str(int(now))), ("h", ":".join(names)), ("bh", body_hash), ("b", "")]
        unsigned = _fold(tags)
        field = f"DKIM-Signature:{unsigned}\r\n".encode("ascii")
        # The verifier's own reading: the new field on top of the header block it will sit on.
        block = read_message(field + header, _UNBOUNDED)
        header_input = header_hash_input(block.data, block.fields[1:], [n.encode("ascii") for n in names],
                                         block.fields[0], relaxed=True)
        value = _with_signature(unsigned, _sign_input(key, header_input))
        signatures.append(f"DKIM-Signature:{value}\r\n".encode("ascii"))
    return b"".join(signatures) + message.data
