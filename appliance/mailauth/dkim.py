"""DKIM verification (RFC 6376, RFC 8463 ed25519, RFC 8301) on dkimpy, with async key lookup.

Keys are fetched through our ``Resolver`` first (so DNS trouble is visible as
temperror and shares the cache); then dkimpy's own canonicalization and
signature code runs off the event loop. The checks that depend on the clock
(``t=``, ``x=``) are made here against the caller's ``now`` instead of dkimpy's
wall clock, so a message can be judged as of any moment.
"""

from __future__ import annotations

__all__ = ["MAX_SIGNATURES", "verify_dkim"]

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

import dkim
import dkim.canonicalization
import dkim.util

from appliance.errors import DnsTemporaryError
from appliance.mailauth.dns import Resolver
from appliance.mailauth.results import DkimResult, Verdict

MAX_SIGNATURES = 10
"""RFC 6376 6.1: verifiers SHOULD limit how many signatures they try; the rest get ``policy``."""
MIN_RSA_BITS = 1024
"""RFC 8301 3.2: verifiers MUST NOT consider signatures with smaller RSA keys valid."""
FUTURE_SLOP = 36_000
"""dkimpy's leeway for a ``t=`` ahead of the verifier's clock (senders' clocks drift)."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_LENIENT_TAG = re.compile(rb"(?:^|;)\s*([ds])\s*=\s*([^;\s]*)")
_SIG_HEADER = re.compile(rb"^dkim-signature[ \t]*:((?:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*))",
                         re.IGNORECASE | re.MULTILINE)
_Canon = dkim.canonicalization.CanonicalizationPolicy
_HASHES = {b"rsa-sha256": "sha256", b"rsa-sha1": "sha1", b"ed25519-sha256": "sha256"}


@dataclass(slots=True)
class _Signature:
    """One DKIM-Signature header, parsed far enough to know which key it needs."""

    index: int
    domain: str
    selector: str
    algorithm: str
    tags: dict[bytes, bytes] | None
    problem: str = ""
    """Why the signature is unusable before any key is fetched (then a permerror)."""

    @property
    def key_name(self) -> str | None:
        if self.problem or self.tags is None:
            return None
        return f"{self.selector}._domainkey.{self.domain}"


_KeyAnswer = list[str] | DnsTemporaryError


async def verify_dkim(raw: bytes, resolver: Resolver, now: float) -> list[DkimResult]:
    """One ``DkimResult`` per DKIM-Signature header, in header order.

    Never raises for bad input: a signature that cannot be understood is a
    permerror, a message whose header block cannot be parsed gives a permerror
    per signature header found (or ``[]``).
    """
    try:
        verifier = dkim.DKIM(raw)
    except Exception as exc:  # dkimpy raises assorted errors on hostile header blocks
        return _unparsable(raw, f"message headers cannot be parsed: {exc}")
    signatures = _parse_signatures(verifier, now)
    names = sorted({s.key_name for s in signatures if s.key_name})
    answers = await asyncio.gather(*(_fetch_key(resolver, n) for n in names))
    keys: dict[str, _KeyAnswer] = dict(zip(names, answers, strict=True))
    # Canonicalization and the public-key arithmetic are CPU work: keep them off the loop.
    return await asyncio.to_thread(_verify_all, verifier, signatures, keys)


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


def _parse_signatures(verifier: dkim.DKIM, now: float) -> list[_Signature]:
    headers = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    signatures = []
    for index, value in enumerate(headers):
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            domain, selector = _lenient_ids(value)
            signatures.append(_Signature(index, domain, selector, "", None, f"bad tag list: {exc}"))
            continue
        domain = _text(tags.get(b"d", b"")).lower()
        selector = _text(tags.get(b"s", b""))
        signature = _Signature(index, domain, selector, _text(tags.get(b"a", b"")), tags)
        if index >= MAX_SIGNATURES:
            signature.problem = f"not verified: more than {MAX_SIGNATURES} signatures"
        else:
            signature.problem = _signature_problem(tags, domain, selector, now)
        signatures.append(signature)
    return signatures


def _signature_problem(tags: dict[bytes, bytes], domain: str, selector: str, now: float) -> str:
    """RFC 6376 6.1.1: why this signature must be ignored (PERMFAIL); "" if it may be verified."""
    # dkimpy's field checks, minus t= and x= which it compares with its own clock.
    try:
        dkim.validate_signature_fields({k: v for k, v in tags.items() if k not in (b"t", b"x")})
    except dkim.DKIMException as exc:
        return str(exc)
    if not _is_domain(domain) or not all(_LABEL.fullmatch(p) for p in selector.split(".")):
        return "d= or s= is not a valid domain name"
    signed = [h.strip().lower() for h in re.split(rb"\s*:\s*", tags[b"h"])]
    if b"from" not in signed:
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


def _verify_all(verifier: dkim.DKIM, signatures: list[_Signature],
                keys: Mapping[str, _KeyAnswer]) -> list[DkimResult]:
    headers = [(n, v) for n, v in verifier.headers if n.lower() == b"dkim-signature"]
    results = []
    for sig in signatures:
        try:
            results.append(_verify_one(verifier, sig, headers[sig.index], keys))
        except Exception as exc:  # a verifier fault on hostile input is that signature's permerror
            results.append(_result(sig, "permerror", f"cannot verify: {exc}"))
    return results


def _result(sig: _Signature, result: Verdict, detail: str,
            covers_whole_body: bool = True) -> DkimResult:
    return DkimResult(result=result, domain=sig.domain, selector=sig.selector,
                      algorithm=sig.algorithm, covers_whole_body=covers_whole_body, detail=detail)


def _verify_one(verifier: dkim.DKIM, sig: _Signature, header: tuple[bytes, bytes],
                keys: Mapping[str, _KeyAnswer]) -> DkimResult:
    name = sig.key_name
    if sig.problem or sig.tags is None or name is None:
        word: Verdict = "policy" if sig.problem.startswith("not verified") else "permerror"
        return _result(sig, word, sig.problem)
    tags = sig.tags
    answer = keys[name]
    if isinstance(answer, DnsTemporaryError):
        return _result(sig, "temperror", f"key lookup failed: {answer}")
    key, key_problem = _select_key(name, answer, tags)
    if key is None:
        return _result(sig, "permerror", key_problem)
    pk, keysize, ktag = key

    try:
        canon = _Canon.from_c_value(tags.get(b"c", b"simple/simple"))
    except dkim.canonicalization.InvalidCanonicalizationPolicyError as exc:
        return _result(sig, "permerror", f"invalid c= value: {exc}")
    body = canon.canonicalize_body(verifier.body)
    covers_whole_body = True
    signed_body = body
    if b"l" in tags:
        length = int(tags[b"l"])
        signed_body = body[:length]
        covers_whole_body = length >= len(body)
    # RFC 6376 6.1.3 step 1: the body hash, checked here so a changed body reads as such.
    digest = hashlib.new(_HASHES[tags[b"a"]], signed_body).digest()
    try:
        expected = base64.b64decode(re.sub(rb"\s+", b"", tags[b"bh"]), validate=True)
    except binascii.Error:
        return _result(sig, "permerror", "bh= is not base64")
    if digest != expected:
        return _result(sig, "fail", "body hash mismatch: the body was changed after signing",
                       covers_whole_body)

    verifier.pk, verifier.keysize, verifier.ktag = pk, keysize, ktag
    verifier.seqtlsrpt = False  # _check_key accepted only keys whose service includes email
    include_headers = [h.strip().lower() for h in re.split(rb"\s*:\s*", tags[b"h"])]
    header_tags = {k: v for k, v in tags.items() if k != b"bh"}  # body hash done above
    try:
        valid = verifier.verify_sig_process(header_tags, include_headers, header, None)
    except dkim.DKIMException as exc:
        return _result(sig, "permerror", str(exc), covers_whole_body)
    if not valid:
        return _result(sig, "fail", "signature did not verify", covers_whole_body)
    key_text = f"{keysize}-bit {ktag.decode()} key"
    if not covers_whole_body:
        key_text += f"; l= leaves {len(body) - len(signed_body)} body bytes unsigned"
    if tags[b"a"] == b"rsa-sha1":
        return _result(sig, "policy", f"rsa-sha1 is not acceptable (RFC 8301 3.1); {key_text}",
                       covers_whole_body)
    return _result(sig, "pass", key_text, covers_whole_body)


_Key = tuple[object, int, bytes]
"""dkimpy's parsed public key, its size in bits, and its type (``rsa`` or ``ed25519``)."""


def _select_key(name: str, records: list[str], tags: dict[bytes, bytes]) -> tuple[_Key | None, str]:
    """The first key record at ``name`` usable for this signature, or None and why not."""
    if not records:
        return None, f"no key for signature: {name} has no TXT record"  # RFC 6376 6.1.2
    problem = ""
    for record in records:
        key, problem = _check_key(name, record, tags)
        if key is not None:
            return key, ""
    return None, problem


def _check_key(name: str, record: str, tags: dict[bytes, bytes]) -> tuple[_Key | None, str]:
    """RFC 6376 3.6.1 and 6.1.2: is this key record usable for this signature?"""
    raw = record.encode("utf-8", "replace")
    try:
        key_tags = dkim.util.parse_tag_value(raw)
    except dkim.util.InvalidTagValueList as exc:
        return None, f"key record at {name} is malformed: {exc}"
    if b"p" in key_tags and not re.sub(rb"\s+", b"", key_tags[b"p"]):
        return None, f"key at {name} is revoked (empty p=)"
    service = key_tags.get(b"s", b"*")
    if not {s.strip() for s in service.split(b":")} & {b"*", b"email"}:
        return None, f"key at {name} is not for email (s={_text(service)})"
    try:
        pk, keysize, ktag, _tlsrpt = dkim.evaluate_pk(name, raw)
    except (dkim.DKIMException, binascii.Error, ValueError, TypeError, IndexError,
            KeyError) as exc:
        return None, f"key at {name} is unusable: {exc}"
    if pk is None:  # dkimpy's answer for a service list it does not know, like email:tlsrpt
        return None, f"key at {name} is unusable (s={_text(service)})"
    algorithm = tags[b"a"]
    wanted = b"ed25519" if algorithm.startswith(b"ed25519") else b"rsa"
    if ktag != wanted:
        return None, f"key at {name} is k={_text(ktag)}, signature is a={_text(algorithm)}"
    if b"h" in key_tags:
        allowed = {h.strip().lower() for h in key_tags[b"h"].split(b":")}
        if _HASHES[algorithm].encode() not in allowed:
            return None, (f"key at {name} does not allow {_HASHES[algorithm]}"
                          f" (h={_text(key_tags[b'h'])})")
    if ktag == b"rsa" and keysize < MIN_RSA_BITS:
        return None, f"RSA key at {name} is {keysize} bits, under {MIN_RSA_BITS} (RFC 8301 3.2)"
    flags = {f.strip() for f in key_tags.get(b"t", b"").split(b":")}
    # t=s: the i= domain must be d= itself, not a subdomain.
    if (b"s" in flags and b"i" in tags
            and tags[b"i"].rpartition(b"@")[2].lower() != tags[b"d"].lower()):
        return None, f"key at {name} has t=s but i= is a subdomain of d="
    return (pk, keysize, ktag), ""
