"""DKIM verification (RFC 6376, RFC 8463 ed25519, RFC 8301), with async key lookup.

Keys are fetched through our ``Resolver`` (so DNS trouble is visible as
temperror and shares the cache). The message is read with the same rules as
the gate's (``appliance.mail.wire``); canonicalization is bytes operations in
C (``dkim_canon``) and the public-key arithmetic is OpenSSL's through
``cryptography`` (``dkim_keys``). dkimpy's tag-list parser and signature field
checks are still used, and dkimpy itself is the reference our tests compare
verdicts with. The checks that depend on the clock (``t=``, ``x=``) are made
against the caller's ``now``, so a message can be judged as of any moment.

Small messages are verified on the event loop (the work is well under a
millisecond); from ``OFFLOAD_BYTES`` on, reading, body hashing and the
signature checks run in a worker thread, the body hashes while the keys are
being fetched.
"""

from __future__ import annotations

__all__ = ["MAX_SIGNATURES", "OFFLOAD_BYTES", "verify_dkim"]

import asyncio
import base64
import binascii
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import dkim
import dkim.util

from appliance.errors import DnsTemporaryError, MalformedMessage, MessageTooComplex, MessageTooLarge
from appliance.mail.wire import HeaderField, ReadingLimits, read_message
from appliance.mailauth.dkim_canon import (
    CanonicalBody,
    canonical_body,
    header_hash_input,
    signed_field_names,
)
from appliance.mailauth.dkim_keys import DkimKey, UnusableKey, load_key, signature_valid
from appliance.mailauth.dns import Resolver
from appliance.mailauth.results import DkimResult, Verdict

MAX_SIGNATURES = 10
"""RFC 6376 6.1: verifiers SHOULD limit how many signatures they try; the rest get ``policy``."""
MIN_RSA_BITS = 1024
"""RFC 8301 3.2: verifiers MUST NOT consider signatures with smaller RSA keys valid."""
FUTURE_SLOP = 36_000
"""dkimpy's leeway for a ``t=`` ahead of the verifier's clock (senders' clocks drift)."""
OFFLOAD_BYTES = 65_536
"""Messages from this size on are verified in a worker thread (about 0.3 ms of work at 64 KiB)."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_LENIENT_TAG = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]*)")
_SIG_HEADER = re.compile(rb"^dkim-signature[ \t]*:((?:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*))",
                         re.IGNORECASE | re.MULTILINE)
_WHITE = b" \t\r\n\x0b\x0c"  # what \s matches in a bytes pattern
_HASHES = {b"rsa-sha256": "sha256", b"rsa-sha1": "sha1", b"ed25519-sha256": "sha256"}
_CANONS = {b"simple": False, b"relaxed": True}
# The gate bounds the header block before DKIM sees it; here the reading only has to agree.
_UNBOUNDED = ReadingLimits(max_header_bytes=sys.maxsize, max_header_fields=sys.maxsize,
                           max_header_line=sys.maxsize)
_TESTING = "key is in testing mode (t=y): treated as unsigned (RFC 6376 3.6.1)"

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Message:
    head: bytes
    """The header block; the fields' offsets point into it."""
    fields: list[HeaderField]
    body: bytes


@dataclass(slots=True)
class _Signature:
    """One DKIM-Signature header, parsed far enough to know which key it needs."""

    index: int
    field: HeaderField
    domain: str
    selector: str
    algorithm: str
    tags: dict[bytes, bytes] | None
    problem: str = ""
    """Why the signature is unusable before any key is fetched (then a permerror)."""
    canon: tuple[bool, bool] | None = None
    """(relaxed header, relaxed body) from ``c=``; None when ``c=`` is not valid."""

    @property
    def key_name(self) -> str | None:
        if self.problem or self.tags is None:
            return None
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def body_spec(self) -> _BodySpec | None:
        """Which body hash this signature needs, if it is worth computing."""
        if self.key_name is None or self.tags is None or self.canon is None:
            return None
        length = int(self.tags[b"l"]) if b"l" in self.tags else None
        return self.canon[1], _HASHES[self.tags[b"a"]], length


_BodySpec = tuple[bool, str, int | None]
"""(relaxed, hash name, l= or None)."""
_BodyHash = tuple[bytes, int]
"""The digest and the length of the whole canonical body."""
_KeyAnswer = list[str] | DnsTemporaryError


@dataclass(frozen=True, slots=True)
class _Selected:
    key: DkimKey
    testing: bool
    """``t=y``: the domain is testing DKIM (RFC 6376 3.6.1)."""


async def verify_dkim(raw: bytes, resolver: Resolver, now: float) -> list[DkimResult]:
    """One ``DkimResult`` per DKIM-Signature header, in header order.

    Never raises for bad input: a signature that cannot be understood is a
    permerror, a message whose header block cannot be read gives a permerror
    per signature header found (or ``[]``).
    """
    offload = len(raw) >= OFFLOAD_BYTES

    async def work(function: Callable[..., _T], *args: object) -> _T:
        if offload:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    try:
        message = await work(_read, raw)
    except (MalformedMessage, MessageTooLarge, MessageTooComplex) as exc:
        return _unparsable(raw, f"message headers cannot be parsed: {exc}")
    except Exception as exc:  # never a crash of the gate on hostile bytes
        return _unparsable(raw, f"message headers cannot be read: {exc!r}")
    signatures = _parse_signatures(message, now)
    if not signatures:
        return []
    names = sorted({s.key_name for s in signatures if s.key_name})
    specs = sorted({spec for s in signatures if (spec := s.body_spec) is not None},
                   key=lambda spec: (spec[0], spec[1], -1 if spec[2] is None else spec[2]))
    # The body is hashed while the keys are on their way.
    body_hashes, answers = await asyncio.gather(
        work(_body_hashes, message.body, specs),
        asyncio.gather(*(_fetch_key(resolver, n) for n in names)))
    keys: dict[str, _KeyAnswer] = dict(zip(names, answers, strict=True))
    return await work(_verify_all, message, signatures, keys, body_hashes)


def _read(raw: bytes) -> _Message:
    """The header fields and the body, as the gate reads them (``read_message``)."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") == crlf and raw.count(b"\r") == crlf:
        # Already canonical (what the gate passes): read the header block alone, the body as is.
        if raw.startswith(b"\r\n"):
            end = 2
        else:
            blank = raw.find(b"\r\n\r\n")
            end = len(raw) if blank < 0 else blank + 4
        head = raw[:end]
        return _Message(head, read_message(head, _UNBOUNDED).fields, raw[end:])
    message = read_message(raw, _UNBOUNDED)  # bare LF line ends become CRLF, bare CR is refused
    return _Message(message.data, message.fields, message.body)


async def _fetch_key(resolver: Resolver, name: str) -> _KeyAnswer:
    try:
        return await resolver.query(name, "TXT")
    except DnsTemporaryError as exc:
        return exc


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _is_domain(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _lenient_ids(header_value: bytes) -> tuple[str, str]:
    """Best-effort d= and s= of a signature that does not parse, for the report."""
    found: dict[bytes, bytes] = {}
    for match in _LENIENT_TAG.finditer(header_value):
        found.setdefault(match[1].lower(), match[2])
    return _text(found.get(b"d", b"")).lower(), _text(found.get(b"s", b""))


def _unparsable(raw: bytes, detail: str) -> list[DkimResult]:
    header_block = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    results = []
    for match in _SIG_HEADER.finditer(header_block):
        domain, selector = _lenient_ids(match[1])
        results.append(DkimResult(result="permerror", domain=domain, selector=selector,
                                  detail=detail))
    return results


def _parse_canon(value: bytes) -> tuple[bool, bool] | None:
    """``c=`` as (relaxed header, relaxed body); the body defaults to simple (RFC 6376 3.5)."""
    parts = value.split(b"/")
    if len(parts) not in (1, 2) or not all(p in _CANONS for p in parts):
        return None
    return _CANONS[parts[0]], _CANONS[parts[1]] if len(parts) == 2 else False


def _parse_signatures(message: _Message, now: float) -> list[_Signature]:
    fields = [f for f in message.fields if f.key == "dkim-signature"]
    signatures = []
    for index, field in enumerate(fields):
        value = field.value
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            domain, selector = _lenient_ids(value)
            signatures.append(_Signature(index, field, domain, selector, "", None,
                                         f"bad tag list: {exc}"))
            continue
        domain = _text(tags.get(b"d", b"")).lower()
        selector = _text(tags.get(b"s", b""))
        signature = _Signature(index, field, domain, selector, _text(tags.get(b"a", b"")), tags)
        if index >= MAX_SIGNATURES:
            signature.problem = f"not verified: more than {MAX_SIGNATURES} signatures"
        else:
            signature.problem = _signature_problem(tags, domain, selector, now)
            signature.canon = _parse_canon(tags.get(b"c", b"simple/simple"))
        signatures.append(signature)
    return signatures


def _signature_problem(tags: dict[bytes, bytes], domain: str, selector: str, now: float) -> str:
    """RFC 6376 6.1.1: why this signature must be ignored (PERMFAIL); "" if it may be verified."""
    # dkimpy's field checks, minus t= and x= which it compares with its own clock.
    try:
        dkim.validate_signature_fields({k: v for k, v in tags.items() if k not in (b"t", b"x")})
    except dkim.DKIMException as exc:
        return str(exc)
    except IndexError:  # dkimpy's i= check indexes past the start when i= is d= without an "@"
        return "i= is not an address at d= or a subdomain (RFC 6376 3.5)"
    if not _is_domain(domain) or not all(_LABEL.fullmatch(p) for p in selector.split(".")):
        return "d= or s= is not a valid domain name"
    if b"from" not in signed_field_names(tags[b"h"], extra_from=False):
        return "h= does not include From"  # RFC 6376 6.1.1
    t_value = tags.get(b"t")
    x_value = tags.get(b"x")
    if b"l" in tags and not re.fullmatch(rb"\d{1,76}", tags[b"l"]):
        return "l= is not a decimal length"
    for name, value in ((b"t", t_value), (b"x", x_value)):
        if value is not None and not re.fullmatch(rb"\d{1,12}", value):
            return f"{name.decode()}= is not a decimal timestamp"
    if t_value is not None and int(t_value) > now + FUTURE_SLOP:
        return "t= is in the future"
    if x_value is not None:
        if t_value is not None and int(x_value) < int(t_value):
            return "x= is earlier than t="
        if int(x_value) < now:
            return f"signature expired (x={int(x_value)})"  # RFC 6376 3.5 x=
    return ""


def _body_hashes(body: bytes, specs: list[_BodySpec]) -> dict[_BodySpec, _BodyHash]:
    """RFC 6376 3.7: each needed body hash, each canonical form made once."""
    canonical: dict[bool, CanonicalBody] = {}
    hashes: dict[_BodySpec, _BodyHash] = {}
    for spec in specs:
        relaxed, hash_name, length = spec
        if relaxed not in canonical:
            canonical[relaxed] = canonical_body(body, relaxed)
        canon = canonical[relaxed]
        hashes[spec] = canon.digest(hash_name, length), len(canon)
    return hashes


def _verify_all(message: _Message, signatures: list[_Signature], keys: Mapping[str, _KeyAnswer],
                body_hashes: Mapping[_BodySpec, _BodyHash]) -> list[DkimResult]:
    results = []
    for sig in signatures:
        try:
            results.append(_verify_one(message, sig, keys, body_hashes))
        except Exception as exc:  # a verifier fault on hostile input is that signature's permerror
            results.append(_result(sig, "permerror", f"cannot verify: {exc}"))
    return results


def _result(sig: _Signature, result: Verdict, detail: str,
            covers_whole_body: bool = True) -> DkimResult:
    return DkimResult(result=result, domain=sig.domain, selector=sig.selector,
                      algorithm=sig.algorithm, covers_whole_body=covers_whole_body, detail=detail)


def _verify_one(message: _Message, sig: _Signature, keys: Mapping[str, _KeyAnswer],
                body_hashes: Mapping[_BodySpec, _BodyHash]) -> DkimResult:
    name = sig.key_name
    if sig.problem or sig.tags is None or name is None:
        word: Verdict = "policy" if sig.problem.startswith("not verified") else "permerror"
        return _result(sig, word, sig.problem)
    answer = keys[name]
    if isinstance(answer, DnsTemporaryError):
        return _result(sig, "temperror", f"key lookup failed: {answer}")
    selected, key_problem = _select_key(name, answer, sig.tags)
    if selected is None:
        return _result(sig, "permerror", key_problem)
    result = _check_signature(message, sig, sig.tags, selected.key, body_hashes)
    if selected.testing:
        # RFC 6376 3.6.1: MUST NOT treat the message differently from unsigned mail, even
        # should the signature fail to verify. What the check found stays in the detail.
        return _result(sig, "neutral", f"{_TESTING}; verified alone: {result.result} ({result.detail})",
                       result.covers_whole_body)
    return result


def _check_signature(message: _Message, sig: _Signature, tags: dict[bytes, bytes], key: DkimKey,
                     body_hashes: Mapping[_BodySpec, _BodyHash]) -> DkimResult:
    spec = sig.body_spec
    if sig.canon is None or spec is None:
        return _result(sig, "permerror", f"invalid c= value: {_text(tags.get(b'c', b''))}")
    digest, body_length = body_hashes[spec]
    length = spec[2]
    covers_whole_body = length is None or length >= body_length
    # RFC 6376 6.1.3 step 1: the body hash, checked first so a changed body reads as such.
    try:
        expected = base64.b64decode(tags[b"bh"].translate(None, _WHITE), validate=True)
    except binascii.Error:
        return _result(sig, "permerror", "bh= is not base64")
    if digest != expected:
        return _result(sig, "fail", "body hash mismatch: the body was changed after signing",
                       covers_whole_body)
    try:
        signature = base64.b64decode(tags[b"b"].translate(None, _WHITE))
    except binascii.Error:
        return _result(sig, "permerror", "b= is not base64", covers_whole_body)
    header_input = header_hash_input(message.head, message.fields, signed_field_names(tags[b"h"]),
                                     sig.field, relaxed=sig.canon[0])
    if not signature_valid(key, tags[b"a"], header_input, signature):
        return _result(sig, "fail", "signature did not verify", covers_whole_body)
    key_text = f"{key.bits}-bit {key.kind.decode()} key"
    if length is not None and not covers_whole_body:
        key_text += f"; l= leaves {body_length - length} body bytes unsigned"
    if tags[b"a"] == b"rsa-sha1":
        return _result(sig, "policy", f"rsa-sha1 is not acceptable (RFC 8301 3.1); {key_text}",
                       covers_whole_body)
    return _result(sig, "pass", key_text, covers_whole_body)


def _select_key(name: str, records: list[str],
                tags: dict[bytes, bytes]) -> tuple[_Selected | None, str]:
    """The first key record at ``name`` usable for this signature, or None and why not."""
    if not records:
        return None, f"no key for signature: {name} has no TXT record"  # RFC 6376 6.1.2
    problem = ""
    for record in records:
        selected, problem = _check_key(name, record, tags)
        if selected is not None:
            return selected, ""
    return None, problem


def _check_key(name: str, record: str, tags: dict[bytes, bytes]) -> tuple[_Selected | None, str]:
    """RFC 6376 3.6.1 and 6.1.2: is this key record usable for this signature?"""
    raw = record.encode("utf-8", "replace")
    try:
        key_tags = dkim.util.parse_tag_value(raw)
    except dkim.util.InvalidTagValueList as exc:
        return None, f"key record at {name} is malformed: {exc}"
    if b"p" in key_tags and not key_tags[b"p"].translate(None, _WHITE):
        return None, f"key at {name} is revoked (empty p=)"
    service = key_tags.get(b"s", b"*")
    if not {s.strip() for s in service.split(b":")} & {b"*", b"email"}:
        return None, f"key at {name} is not for email (s={_text(service)})"
    if key_tags.get(b"v", b"DKIM1") != b"DKIM1":
        return None, f"key at {name} is unusable: bad version (v={_text(key_tags[b'v'])})"
    if b"p" not in key_tags:
        return None, f"key at {name} is unusable: no p= tag"
    try:
        key = load_key(key_tags.get(b"k", b"rsa"), key_tags[b"p"])
    except UnusableKey as exc:
        return None, f"key at {name} is unusable: {exc}"
    algorithm = tags[b"a"]
    wanted = b"ed25519" if algorithm.startswith(b"ed25519") else b"rsa"
    if key.kind != wanted:
        return None, f"key at {name} is k={_text(key.kind)}, signature is a={_text(algorithm)}"
    if b"h" in key_tags:
        allowed = {h.strip().lower() for h in key_tags[b"h"].split(b":")}
        if _HASHES[algorithm].encode() not in allowed:
            return None, (f"key at {name} does not allow {_HASHES[algorithm]}"
                          f" (h={_text(key_tags[b'h'])})")
    if key.kind == b"rsa" and key.bits < MIN_RSA_BITS:
        return None, f"RSA key at {name} is {key.bits} bits, under {MIN_RSA_BITS} (RFC 8301 3.2)"
    flags = {f.strip() for f in key_tags.get(b"t", b"").split(b":")}
    # t=s: the i= domain must be d= itself, not a subdomain.
    if (b"s" in flags and b"i" in tags
            and tags[b"i"].rpartition(b"@")[2].lower() != tags[b"d"].lower()):
        return None, f"key at {name} has t=s but i= is a subdomain of d="
    return _Selected(key, testing=b"y" in flags), ""
