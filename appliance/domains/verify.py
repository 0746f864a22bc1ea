"""Is the manifest published? What DNS answers, compared with what the manifest asks for.

The comparison is pure (``check_record``, ``check_ptr``, ``check_domain``) and
reads TXT records by their parsed tags, not their bytes: SPF by mechanisms in
any order (``ip4:192.0.2.1/32`` is ``ip4:192.0.2.1``), DKIM by ``k=`` and
``p=``, DMARC, MTA-STS and TLS-RPT by their tags. Two SPF (or DMARC, ...)
records are wrong, whatever they say: receivers then use neither (RFC 7208
4.5, RFC 7489 6.6.3, RFC 8461 3.1, RFC 8460 3). A lookup that failed
(timeout, SERVFAIL) is "unknown", never "missing". ``lookup``,
``verify_domain`` and ``verify_all`` do the asking through
``appliance.mailauth``'s resolver.
"""

from __future__ import annotations

__all__ = [
    "Answer",
    "CheckState",
    "DomainCheck",
    "RecordCheck",
    "check_domain",
    "check_ptr",
    "check_record",
    "lookup",
    "questions",
    "verify_all",
    "verify_domain",
]

import asyncio
import contextlib
import ipaddress
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

import msgspec

from appliance.domains.manifest import DnsManifest, DnsRecord, PtrAdvice
from appliance.errors import DnsTemporaryError
from appliance.mailauth.dns import Resolver

CheckState = Literal["ok", "missing", "wrong", "unknown"]


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """What DNS said for one name and type: the records as text (empty: none), or the temporary error."""

    values: tuple[str, ...] = ()
    error: str | None = None


class RecordCheck(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One expected record against what was found."""

    name: str
    type: str
    state: CheckState
    expected: str
    found: tuple[str, ...]
    advice: str
    """What to do about it ("" when ok)."""


class DomainCheck(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    domain: str
    checked_at: datetime
    ok: bool
    """Every record (and PTR) is as the manifest asks."""
    records: tuple[RecordCheck, ...]


# -- TXT records by their tags -----------------------------------------------------------------------------------

def _tags(text: str) -> dict[str, str]:
    """A ``tag=value; ...`` list (RFC 6376 3.2): names lowercased, the first of a repeated tag kept."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip():
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _versioned(values: Iterable[str], version: str) -> list[dict[str, str]]:
    """The records whose first tag is ``v=<version>`` (the others are not of this kind), parsed."""
    found = []
    for value in values:
        first, _, _ = value.partition(";")
        name, eq, v = first.partition("=")
        if eq and name.strip().lower() == "v" and v.strip() == version:
            found.append(_tags(value))
    return found


def _spf_term(term: str) -> str:
    """An SPF term as compared: lowercase, no ``+`` (the default qualifier), addresses as networks."""
    term = term.lower().removeprefix("+")
    qualifier = term[0] if term[:1] in ("-", "~", "?") else ""
    body = term[len(qualifier):]
    kind, colon, rest = body.partition(":")
    if colon and kind in ("ip4", "ip6"):
        with contextlib.suppress(ValueError):  # not an address: compared as written
            body = f"{kind}:{ipaddress.ip_network(rest, strict=False).compressed}".removesuffix(
                "/32" if kind == "ip4" else "/128")
    return qualifier + body


def _spf_records(values: Iterable[str]) -> list[list[str]]:
    """RFC 7208 4.5: records that begin with exactly ``v=spf1`` (then a space or the end), as terms."""
    return [[_spf_term(t) for t in v.split()[1:]] for v in values
            if v.lower() == "v=spf1" or v.lower().startswith("v=spf1 ")]


def _all_term(terms: list[str]) -> str | None:
    return next((t for t in terms if t.lstrip("-~?") == "all"), None)


def _mailtos(value: str) -> set[str]:
    """The URIs of a ``rua=`` list, lowercased, without a ``!size`` limit (RFC 7489 6.4)."""
    return {uri.strip().split("!")[0].lower() for uri in value.split(",") if uri.strip()}


_STRENGTH = {"none": 0, "quarantine": 1, "reject": 2}


def _several(kind: str, name: str, count: int) -> str:
    return f"{name} has {count} {kind} records: receivers then use none of them; keep one (the expected value)"


def _check_spf(expected: DnsRecord, values: tuple[str, ...]) -> tuple[CheckState, str]:
    records = _spf_records(values)
    if not records:
        return "missing", f"add TXT {expected.name} \"{expected.value}\""
    if len(records) > 1:
        return "wrong", _several("SPF", expected.name, len(records)) + " (RFC 7208 4.5: permerror)"
    want = _spf_records([expected.value])[0]
    found = records[0]
    lacking = [t for t in want if t not in found]
    if lacking or _all_term(found) != _all_term(want):
        return "wrong", (f"SPF at {expected.name} lacks {' '.join(lacking) or _all_term(want)}: "
                         f"publish \"{expected.value}\" (add other senders' mechanisms before -all)")
    return "ok", ""


def _check_dkim(expected: DnsRecord, values: tuple[str, ...]) -> tuple[CheckState, str]:
    want = _tags(expected.value)
    parsed = [_tags(v) for v in values]
    records = [tags for tags in parsed if "p" in tags and tags.get("v", "DKIM1") == "DKIM1"]
    if not records:
        return ("wrong" if values else "missing"), f"publish TXT {expected.name} \"{expected.value}\""
    if len(records) > 1:
        return "wrong", _several("DKIM key", expected.name, len(records))
    found = records[0]
    if found.get("k", "rsa").lower() != want["k"]:
        return "wrong", f"{expected.name} has k={found.get('k', 'rsa')}, the key is k={want['k']}: publish the value"
    if "".join(found["p"].split()) != want["p"]:
        return "wrong", (f"{expected.name} publishes another key (p= differs): mail signed by the appliance "
                         "fails DKIM; publish the value")
    return "ok", ""


def _check_dmarc(expected: DnsRecord, values: tuple[str, ...]) -> tuple[CheckState, str]:
    records = _versioned(values, "DMARC1")
    if not records:
        return "missing", f"add TXT {expected.name} \"{expected.value}\""
    if len(records) > 1:
        return "wrong", _several("DMARC", expected.name, len(records))
    want, found = _tags(expected.value), records[0]
    problems = []
    if _STRENGTH.get(found.get("p", "").lower(), -1) < _STRENGTH[want["p"]]:
        problems.append(f"p={found.get('p', '')} (expected {want['p']} or reject)")
    for tag in ("adkim", "aspf"):
        if found.get(tag, "r").lower() != want[tag]:
            problems.append(f"{tag}={found.get(tag, 'r')} (expected {want[tag]})")
    if not _mailtos(want["rua"]) <= _mailtos(found.get("rua", "")):
        problems.append(f"rua does not include {want['rua']}")
    if problems:
        return "wrong", f"DMARC at {expected.name}: {'; '.join(problems)}; publish \"{expected.value}\""
    return "ok", ""


def _check_sts(expected: DnsRecord, values: tuple[str, ...]) -> tuple[CheckState, str]:
    records = _versioned(values, "STSv1")
    if not records:
        return "missing", f"add TXT {expected.name} \"{expected.value}\""
    if len(records) > 1:
        return "wrong", _several("MTA-STS", expected.name, len(records)) + " (RFC 8461 3.1)"
    want = _tags(expected.value)["id"]
    if records[0].get("id") != want:
        return "wrong", (f"{expected.name} has id={records[0].get('id', '')}, the policy's is {want}: senders keep "
                         f"an old policy until it changes; publish \"{expected.value}\"")
    return "ok", ""


def _check_tlsrpt(expected: DnsRecord, values: tuple[str, ...]) -> tuple[CheckState, str]:
    records = _versioned(values, "TLSRPTv1")
    if not records:
        return "missing", f"add TXT {expected.name} \"{expected.value}\""
    if len(records) > 1:
        return "wrong", _several("TLS-RPT", expected.name, len(records)) + " (RFC 8460 3)"
    want = _tags(expected.value)["rua"]
    if not _mailtos(want) <= _mailtos(records[0].get("rua", "")):
        return "wrong", f"TLS-RPT at {expected.name}: rua does not include {want}; publish \"{expected.value}\""
    return "ok", ""


def _host(value: str) -> str:
    return value.strip().rstrip(".").lower()


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


def _check_plain(expected: DnsRecord, values: tuple[str, ...], siblings: frozenset[str]) -> tuple[CheckState, str]:
    """MX, A, AAAA and CNAME: the set found must be the set expected at that name (another MX or address
    would take mail, or the policy fetch, elsewhere)."""
    if not values:
        return "missing", f"add {expected.type} {expected.name} {expected.value}"
    if expected.type == "MX":
        found = {_host(v.split()[-1]) for v in values}
        want = {_host(s.split()[-1]) for s in siblings}
    elif expected.type == "CNAME":
        found, want = {_host(v) for v in values}, {_host(s) for s in siblings}
    else:
        found, want = {_address(v) for v in values}, {_address(s) for s in siblings}
    if found == want:
        return "ok", ""
    if not want & found:
        return "wrong", f"{expected.name} {expected.type} is {', '.join(sorted(found))}: set it to {expected.value}"
    return "wrong", (f"{expected.name} {expected.type} also has {', '.join(sorted(found - want))}: remove it "
                     f"(only {', '.join(sorted(want))})")


def check_record(expected: DnsRecord, answer: Answer, *, siblings: frozenset[str] | None = None) -> RecordCheck:
    """``expected`` against ``answer`` (the records of its name and type). ``siblings``: every value the
    manifest expects at that name and type (MX, A, AAAA, CNAME), ``expected.value`` alone by default."""
    if answer.error is not None:
        state: CheckState = "unknown"
        advice = f"DNS did not answer ({answer.error}): nothing is known; check again later"
    elif expected.purpose == "spf":
        state, advice = _check_spf(expected, answer.values)
    elif expected.purpose == "dkim":
        state, advice = _check_dkim(expected, answer.values)
    elif expected.purpose == "dmarc":
        state, advice = _check_dmarc(expected, answer.values)
    elif expected.purpose == "mta-sts":
        state, advice = _check_sts(expected, answer.values)
    elif expected.purpose == "tls-rpt":
        state, advice = _check_tlsrpt(expected, answer.values)
    else:
        state, advice = _check_plain(expected, answer.values, siblings or frozenset({expected.value}))
    return RecordCheck(name=expected.name, type=expected.type, state=state, expected=expected.value,
                       found=answer.values, advice=advice)


def check_ptr(expected: PtrAdvice, answer: Answer) -> RecordCheck:
    """The reverse name of a public address against ``expected.target``."""
    if answer.error is not None:
        state: CheckState = "unknown"
        advice = f"DNS did not answer ({answer.error}): nothing is known; check again later"
    elif not answer.values:
        state = "missing"
        advice = f"ask your VPS provider to set the reverse DNS of {expected.address} to {expected.target}"
    elif expected.target in {_host(v) for v in answer.values}:
        state, advice = "ok", ""
    else:
        state, advice = "wrong", (f"{expected.address} points back to {', '.join(answer.values)}: ask your VPS "
                                  f"provider to set it to {expected.target} (receivers compare it with the HELO)")
    return RecordCheck(name=expected.name, type="PTR", state=state, expected=expected.target, found=answer.values,
                       advice=advice)


def questions(manifest: DnsManifest) -> list[tuple[str, str]]:
    """The (name, type) pairs to ask for ``manifest``, each once."""
    asked = [(r.name, r.type) for r in manifest.records] + [(p.name, "PTR") for p in manifest.ptr]
    return list(dict.fromkeys(asked))


def check_domain(manifest: DnsManifest, answers: Mapping[tuple[str, str], Answer], *,
                 checked_at: datetime) -> DomainCheck:
    """Every record of ``manifest`` against ``answers`` (by (name, type), as ``questions`` lists them)."""
    siblings: dict[tuple[str, str], set[str]] = {}
    for record in manifest.records:
        siblings.setdefault((record.name, record.type), set()).add(record.value)
    missing = Answer(error="not asked")
    checks = [check_record(r, answers.get((r.name, r.type), missing),
                           siblings=frozenset(siblings[(r.name, r.type)])) for r in manifest.records]
    checks += [check_ptr(p, answers.get((p.name, "PTR"), missing)) for p in manifest.ptr]
    return DomainCheck(domain=manifest.domain, checked_at=checked_at, ok=all(c.state == "ok" for c in checks),
                       records=tuple(checks))


async def lookup(resolver: Resolver, name: str, rdtype: str) -> Answer:
    """The answer for one question; a temporary DNS failure is an ``Answer`` with its error."""
    try:
        return Answer(values=tuple(await resolver.query(name, rdtype)))
    except DnsTemporaryError as exc:
        return Answer(error=str(exc))


async def verify_domain(manifest: DnsManifest, resolver: Resolver, *, now: datetime) -> DomainCheck:
    """Ask DNS for every record of ``manifest`` (concurrently) and compare."""
    asked = questions(manifest)
    found = await asyncio.gather(*(lookup(resolver, name, rdtype) for name, rdtype in asked))
    return check_domain(manifest, dict(zip(asked, found, strict=True)), checked_at=now)


async def verify_all(manifests: Iterable[DnsManifest], resolver: Resolver, *, now: datetime) -> list[DomainCheck]:
    """``verify_domain`` for each manifest, one domain after the other (a resolver is not flooded)."""
    return [await verify_domain(m, resolver, now=now) for m in manifests]
