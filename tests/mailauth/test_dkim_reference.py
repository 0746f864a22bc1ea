"""Our DKIM verifier against dkimpy, the reference: same canonical forms, same verdicts.

dkimpy canonicalizes and checks signatures in pure Python; ours does it with
bytes operations and OpenSSL. They must agree on every message: the corpus,
and random messages signed by dkimpy (both canonicalizations, both key types)
then changed in ways each canonicalization does or does not tolerate.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import dkim
import dkim.canonicalization
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from appliance.mail.wire import read_message
from appliance.mailauth import StaticResolver, verify_dkim
from appliance.mailauth.dkim_canon import (
    canonical_body,
    canonicalize_body,
    header_hash_input,
    signed_field_names,
    without_b_value,
)
from tests.corpus import corpus_path, read_keyed_message, read_zonefile
from tests.mailauth.conftest import DkimKey, _rsa_key

DKIM_005_SIGNED_AT = 1667843664

# -- the two verifiers -----------------------------------------------------------------------


def dkimpy_verdicts(raw: bytes, records: dict[str, str], now: float) -> list[bool]:
    """dkimpy's verify() for each signature, with keys from ``records`` and its clock at ``now``."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        value = records.get(name.decode().rstrip(".").lower())
        return value.encode() if value is not None else None

    verifier = dkim.DKIM(raw)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    clock = dkim.time
    dkim.time = SimpleNamespace(time=lambda: now)  # t= and x= judged as of ``now`` (no slop trick)
    try:
        verdicts = []
        for index in range(count):
            try:
                verdicts.append(bool(verifier.verify(idx=index, dnsfunc=dnsfunc)))
            except dkim.DKIMException:
                verdicts.append(False)
        return verdicts
    finally:
        dkim.time = clock


def our_verdicts(raw: bytes, records: dict[str, str], now: float) -> list[bool]:
    resolver = StaticResolver({(name, "TXT"): [value] for name, value in records.items()})
    results = asyncio.run(verify_dkim(raw, resolver, now))
    # "policy" for rsa-sha1 is a signature that verified but is not acceptable (RFC 8301).
    return [r.result == "pass" or (r.result == "policy" and r.algorithm == "rsa-sha1")
            for r in results]


# -- canonical forms, compared directly --------------------------------------------------------

_TEXT = st.text(st.sampled_from(list("abcXYZ019.,:;<>@=é")), max_size=6)
_WSP = st.text(st.sampled_from([" ", "\t"]), max_size=4)
_LINE = st.lists(st.tuples(_TEXT, _WSP), max_size=6).map(
    lambda parts: "".join(a + b for a, b in parts))
_BODY = st.tuples(st.lists(_LINE, max_size=8), st.integers(0, 3), st.booleans()).map(
    lambda t: ("\r\n".join(t[0]) + "\r\n" * t[1] + ("\r\n" if t[2] and t[0] else "")).encode())


@settings(max_examples=400, deadline=None)
@given(_BODY)
def test_body_canonicalization_matches_dkimpy(body):
    assert canonicalize_body(body, relaxed=False) == dkim.canonicalization.Simple.canonicalize_body(body)
    assert canonicalize_body(body, relaxed=True) == dkim.canonicalization.Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(_BODY, st.integers(0, 300), st.booleans(), st.data())
def test_body_hash_with_and_without_l_matches_dkimpy(body, blank_lines, relaxed, data):
    body += b"\r\n" * blank_lines  # past the tail the trailing CRLFs are first looked for in
    policy = dkim.canonicalization.Relaxed if relaxed else dkim.canonicalization.Simple
    reference = policy.canonicalize_body(body)
    canon = canonical_body(body, relaxed)
    assert len(canon) == len(reference)
    limit = data.draw(st.none() | st.integers(0, len(reference) + 3))
    signed = reference if limit is None else reference[:limit]
    assert canon.digest("sha256", limit) == hashlib.sha256(signed).digest()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"b", b"=", b" ", b"\r\n", b"\n", b";", b"a", b"bh", b"\t",
                                 b"\r\n ", b"+", b"x=", b"/", b"b="]), max_size=16).map(b"".join))
def test_b_value_is_emptied_as_dkimpy_does(value):
    assert without_b_value(value) == dkim.RE_BTAG.sub(rb"\1", value)


_NAMES = ["From", "To", "Subject", "Date", "X-Tag", "x-tag", "Cc", "Reply-To"]


@st.composite
def _header_block(draw: st.DrawFn) -> bytes:
    fields = []
    for name in draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=8)):
        words = draw(st.lists(_TEXT.filter(bool), min_size=1, max_size=4))
        value = draw(_WSP)
        for word in words:
            value += word + draw(st.sampled_from([" ", "  ", "\t", "\r\n ", "\r\n\t", " \r\n "]))
        fields.append(f"{name}:{value.rstrip(chr(13) + chr(10) + ' ')}{draw(_WSP)}\r\n")
    return "".join(fields).encode()


@settings(max_examples=300, deadline=None)
@given(_header_block(), st.lists(st.sampled_from([n.lower() for n in _NAMES] + ["missing"]),
                                 min_size=1, max_size=10), st.booleans())
def test_header_hash_input_matches_dkimpy(block, names, relaxed):
    sig_value = b" v=1; a=rsa-sha256; d=example.com; s=s;\r\n\th=" + b":".join(
        n.encode() for n in names) + b"; bh=AAAA; b=abcd\r\n efgh=="
    head = b"DKIM-Signature:" + sig_value + b"\r\n" + block + b"\r\n"
    reading = read_message(head)
    [signature] = [f for f in reading.fields if f.key == "dkim-signature"]
    h_value = b":".join(n.encode() for n in names)
    ours = header_hash_input(reading.data, reading.fields, signed_field_names(h_value), signature,
                             relaxed)

    reference = dkim.DKIM(head)
    policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(
        b"relaxed/simple" if relaxed else b"simple/simple")
    hasher = dkim.HashThrough(dkim.hashlib.sha256(), debug=True)
    include = [n.encode() for n in names] + ([b"from"] if "from" in names else [])
    sig_header = next(h for h in reference.headers if h[0].lower() == b"dkim-signature")
    dkim.hash_headers(hasher, policy, policy.canonicalize_headers(reference.headers), include,
                      sig_header, {})
    assert ours == hasher.hashed()


# -- the corpus ----------------------------------------------------------------------------------

def _corpus_cases() -> Iterator[tuple[str, bytes, dict[str, str], float]]:
    for name in ["001", "002", "003", "004", "005", "006"]:
        corpus = read_keyed_message(corpus_path("mail-auth-dkim", f"{name}.txt"))
        now = DKIM_005_SIGNED_AT if name == "005" else time.time()
        yield f"dkim-{name}", corpus.message, dict(corpus.records), now
        if name == "005":
            yield "dkim-005-expired", corpus.message, dict(corpus.records), time.time()
    for name in ["001", "002"]:
        corpus = read_keyed_message(corpus_path("mail-auth-arc", f"{name}.txt"))
        yield f"arc-{name}", corpus.message, dict(corpus.records), time.time()
    zone = read_zonefile(corpus_path("auth-milter", "zonefile"))
    # t=y (testing) is ours to honour, not dkimpy's: compare the signature checks without it.
    records = {r.name.lower(): "".join(r.value if isinstance(r.value, tuple) else (r.value,))
               .replace("t=y; ", "")
               for r in zone.records if r.type == "TXT" and "_domainkey" in r.name}
    for path in sorted(corpus_path("auth-milter", "messages").glob("*.eml")):
        yield f"milter-{path.stem}", path.read_bytes(), records, time.time()


def test_corpus_verdicts_match_dkimpy():
    compared = 0
    for label, raw, records, now in _corpus_cases():
        ours, reference = our_verdicts(raw, records, now), dkimpy_verdicts(raw, records, now)
        assert ours == reference, label
        compared += len(ours)
    assert compared >= 20  # every signed message in the corpus took part


# -- random messages signed by dkimpy, then changed -------------------------------------------

@dataclass(frozen=True)
class Keys:
    rsa: DkimKey
    ed25519: DkimKey

    @property
    def records(self) -> dict[str, str]:
        return {"rsa._domainkey.example.com": self.rsa.record,
                "ed._domainkey.example.com": self.ed25519.record}


@pytest.fixture(scope="module")
def keys(ed25519_key) -> Keys:
    return Keys(_rsa_key(1024), ed25519_key)  # 1024 bits: dkimpy signs in pure Python


_HEADER_NAMES = ["To", "Subject", "Date", "Message-ID", "Cc", "X-List", "Reply-To"]


@st.composite
def _message(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    names = ["From", *draw(st.lists(st.sampled_from(_HEADER_NAMES), max_size=6))]
    names = draw(st.permutations(names))
    fields = []
    for name in names:
        words = draw(st.lists(_TEXT.filter(bool), min_size=1, max_size=5))
        value = draw(st.sampled_from([" ", "", "  ", "\t"]))
        for i, word in enumerate(words):
            sep = "" if i == len(words) - 1 else draw(st.sampled_from([" ", "  ", "\t", "\r\n ",
                                                                       "\r\n\t", " \r\n  "]))
            value += word + sep
        fields.append(f"{name}:{value}{draw(st.sampled_from(['', ' ', chr(9)]))}\r\n")
    body = draw(_BODY)
    return "".join(fields).encode() + b"\r\n" + body, names


def _sign(raw: bytes, names: list[str], keys: Keys, data: st.DataObject) -> bytes:
    algorithm = data.draw(st.sampled_from([b"rsa-sha256", b"ed25519-sha256", b"rsa-sha1"]))
    canon = data.draw(st.tuples(st.sampled_from([b"simple", b"relaxed"]),
                                st.sampled_from([b"simple", b"relaxed"])))
    signed = ["from", *data.draw(st.lists(st.sampled_from(
        [n.lower() for n in names] + ["in-reply-to", "from"]), max_size=8))]
    key = keys.ed25519 if algorithm.startswith(b"ed25519") else keys.rsa
    selector = b"ed" if key is keys.ed25519 else b"rsa"
    header = dkim.sign(raw, selector, b"example.com", key.private, signature_algorithm=algorithm,
                       canonicalize=canon, include_headers=[n.encode() for n in signed],
                       length=data.draw(st.booleans()))
    return header + raw


MUTATIONS = ["header-byte", "body-byte", "body-append", "header-space", "body-space",
             "body-trailing-space", "body-blank-lines", "tab-for-space", "refold", "unfold",
             "header-above", "header-below", "name-case", "header-trailing-space"]
"""Changes a relay (or an attacker) could make; relaxed tolerates some, simple fewer."""


def _mutate(raw: bytes, data: st.DataObject, kind: str | None = None) -> tuple[bytes, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if kind is None:
        kind = data.draw(st.sampled_from(MUTATIONS))
    if kind == "header-byte":
        at = data.draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        spots = [i for i, c in enumerate(line) if chr(c).isalnum() and i > line.find(b":")]
        if spots:
            i = data.draw(st.sampled_from(spots))
            lines[at] = line[:i] + (b"Q" if line[i:i + 1] != b"Q" else b"R") + line[i + 1:]
    elif kind == "body-byte" and body:
        i = data.draw(st.integers(0, len(body) - 1))
        if body[i:i + 1] not in (b"\r", b"\n"):
            body = body[:i] + (b"Q" if body[i:i + 1] != b"Q" else b"R") + body[i + 1:]
    elif kind == "body-append":
        body += b"appended line\r\n"
    elif kind in ("header-space", "body-space", "tab-for-space"):
        target = head if kind == "header-space" else body
        needle, replacement = (b" ", b"  ") if kind != "tab-for-space" else (b" ", b"\t")
        if kind == "tab-for-space":
            target = data.draw(st.sampled_from([head, body]))
        spots = [i for i in range(len(target)) if target[i:i + 1] == needle]
        if spots:
            i = data.draw(st.sampled_from(spots))
            changed = target[:i] + replacement + target[i + 1:]
            if target is head:
                head = changed
            else:
                body = changed
            lines = head.split(b"\r\n")
    elif kind == "body-trailing-space" and b"\r\n" in body:
        i = data.draw(st.sampled_from([i for i in range(len(body)) if body[i:i + 2] == b"\r\n"]))
        body = body[:i] + b" \t" + body[i:]
    elif kind == "body-blank-lines":
        body += b"\r\n\r\n"
    elif kind in ("refold", "unfold"):
        old, new = (b"\r\n ", b"\r\n\t") if kind == "refold" else (b"\r\n\t", b" ")
        lines = b"\r\n".join(lines).replace(old, new, 1).split(b"\r\n")
    elif kind in ("header-above", "header-below"):
        name = data.draw(st.sampled_from([b"From", b"Subject", b"X-Added", b"To", b"Cc"]))
        field = name + b": added by a relay"
        lines = [field, *lines] if kind == "header-above" else [*lines, field]
    elif kind == "name-case":
        at = data.draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        if line[:1] not in (b" ", b"\t") and b":" in line:
            name, colon, rest = line.partition(b":")
            lines[at] = name.swapcase() + colon + rest
    elif kind == "header-trailing-space":
        at = data.draw(st.integers(0, len(lines) - 1))
        lines[at] += b" "
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, kind


@pytest.mark.parametrize("first", MUTATIONS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message(), st.data())
def test_random_signed_and_changed_messages_get_dkimpys_verdicts(keys, first, message, data):
    raw, names = message
    signed = _sign(raw, names, keys, data)
    if data.draw(st.booleans()):
        signed = _sign(signed, names, keys, data)  # a second signature above the first
    changed, kind = _mutate(signed, data, first)
    for _ in range(data.draw(st.integers(0, 2))):
        changed, more = _mutate(changed, data)
        kind += "+" + more
    now = time.time()
    ours = our_verdicts(changed, keys.records, now)
    event(f"{kind}: {'pass' if all(ours) else 'fail' if not any(ours) else 'mixed'}")
    assert ours == dkimpy_verdicts(changed, keys.records, now)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_message(), st.data())
def test_unchanged_signed_messages_pass_with_both(keys, message, data):
    raw, names = message
    signed = _sign(raw, names, keys, data)
    now = time.time()
    assert our_verdicts(signed, keys.records, now) == [True]
    assert dkimpy_verdicts(signed, keys.records, now) == [True]


@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed")])
@pytest.mark.parametrize("where", ["above", "below"])
def test_a_second_from_breaks_a_signature_over_one(keys, canon, where):
    # RFC 6376 alone would pick the lowest From and pass; dkimpy (bug 644046) and we hash one
    # more From than h= lists, so a From added anywhere is covered and breaks the signature.
    raw = (b"From: alice@example.com\r\nTo: agent@appliance.test\r\nSubject: hi\r\n\r\n"
           b"Hello.\r\n")
    signed = dkim.sign(raw, b"ed", b"example.com", keys.ed25519.private,
                       signature_algorithm=b"ed25519-sha256", canonicalize=canon,
                       include_headers=[b"from", b"to", b"subject"]) + raw
    extra = b"From: mallory@evil.example\r\n"
    head, _, body = signed.partition(b"\r\n\r\n")
    changed = extra + signed if where == "above" else head + b"\r\n" + extra + b"\r\n" + body
    now = time.time()
    assert our_verdicts(signed, keys.records, now) == dkimpy_verdicts(signed, keys.records, now) == [True]
    assert our_verdicts(changed, keys.records, now) == dkimpy_verdicts(changed, keys.records, now) == [False]
