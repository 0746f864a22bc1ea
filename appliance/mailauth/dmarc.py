"""DMARC (RFC 7489): policy discovery and identifier alignment with the From domain."""

from __future__ import annotations

__all__ = [
    "DmarcRecord",
    "PolicyLookup",
    "discover_policy",
    "evaluate_dmarc",
    "judge",
    "organizational_domain",
    "parse_record",
]

from collections.abc import Sequence
from typing import Literal

import msgspec
from publicsuffixlist import PublicSuffixList

from appliance.errors import DnsTemporaryError
from appliance.mailauth.dns import Resolver
from appliance.mailauth.results import DkimResult, DmarcResult, SpfResult

_PSL = PublicSuffixList()  # loads the bundled list once; lookups are then pure


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the registered domain under the Public Suffix List (itself when none)."""
    name = domain.strip().rstrip(".").lower()
    found = _PSL.privatesuffix(name) if name else None
    return str(found) if found else name


def _aligned(a: str, b: str, mode: Literal["r", "s"]) -> bool:
    """RFC 7489 3.1: strict is an exact match, relaxed is the same organizational domain."""
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


class DmarcRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The tags of a DMARC record that decide our result."""

    p: Literal["none", "quarantine", "reject"]
    sp: Literal["none", "quarantine", "reject"] | None = None
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"


class PolicyLookup(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of policy discovery (RFC 7489 6.6.3)."""

    record: DmarcRecord | None = None
    found_at: str = ""
    """The name whose ``_dmarc`` record applied: the From domain or its organizational domain."""
    error: Literal["temperror", "permerror"] | None = None
    detail: str = ""


_POLICIES = ("none", "quarantine", "reject")


def parse_record(text: str) -> DmarcRecord | str | None:
    """A DMARC record, a string saying why it is unusable, or None when it is not DMARC at all."""
    parts = [p for p in text.split(";") if p.strip()]
    if not parts:
        return None
    name, eq, value = parts[0].partition("=")
    # RFC 7489 6.3: v=DMARC1 first, matched exactly, or the record is not DMARC.
    if name.strip().lower() != "v" or not eq or value.strip() != "DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if eq and name not in tags:
            tags[name] = value.strip()
    p = tags.get("p", "").lower()
    sp = tags.get("sp", "").lower() or None
    if p not in _POLICIES or (sp is not None and sp not in _POLICIES):
        # RFC 7489 6.6.3 step 6: with a reporting address, act as if p=none; else unusable.
        if "rua" not in tags:
            return f"invalid policy p={tags.get('p', '')!r}" + (f" sp={sp!r}" if sp else "")
        p, sp = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        p=p,  # type: ignore[arg-type]  # checked against _POLICIES above
        sp=sp,  # type: ignore[arg-type]
        adkim="s" if adkim == "s" else "r",  # unknown values fall back to the default
        aspf="s" if aspf == "s" else "r",
    )


async def _records_at(domain: str, resolver: Resolver) -> list[DmarcRecord | str]:
    answers = await resolver.query(f"_dmarc.{domain}", "TXT")
    parsed = [parse_record(text) for text in answers]
    return [r for r in parsed if r is not None]  # RFC 7489 6.6.3 step 2: drop non-DMARC TXT


async def discover_policy(from_domain: str, resolver: Resolver) -> PolicyLookup:
    """RFC 7489 6.6.3: ``_dmarc.<From domain>``, else ``_dmarc.<organizational domain>``."""
    domain = from_domain.strip().rstrip(".").lower()
    if not domain:
        return PolicyLookup(error="permerror", detail="no From domain")
    org = organizational_domain(domain)
    for name in dict.fromkeys((domain, org)):
        try:
            records = await _records_at(name, resolver)
        except DnsTemporaryError as exc:
            return PolicyLookup(error="temperror", found_at=name,
                                detail=f"DMARC lookup failed: {exc}")
        if not records:
            continue
        if len(records) > 1:
            # Step 5: several records means no policy (and, the set not being empty, step 3
            # never falls back to the organizational domain).
            return PolicyLookup(found_at=name,
                                detail=f"_dmarc.{name} has {len(records)} DMARC records")
        record = records[0]
        if isinstance(record, str):
            return PolicyLookup(error="permerror", found_at=name, detail=f"_dmarc.{name}: {record}")
        return PolicyLookup(record=record, found_at=name)
    return PolicyLookup(detail=f"no DMARC record for {domain}")


def judge(from_domain: str, dkim: Sequence[DkimResult], spf: SpfResult, mail_from: str,
          lookup: PolicyLookup) -> DmarcResult:
    """The DMARC result from a discovered policy and the DKIM and SPF results."""
    domain = from_domain.strip().rstrip(".").lower()
    org = organizational_domain(domain)
    record = lookup.record
    # Without a usable record alignment is still computed, in relaxed mode, because the
    # gate's requireDkim / requireSpf rest on it even for domains that publish no DMARC.
    adkim = record.adkim if record else "r"
    aspf = record.aspf if record else "r"

    # Deliberately stricter than RFC 7489: a signature whose l= leaves part of the body
    # unsigned vouches for nothing, since anyone may append to that body. Only pass
    # with covers_whole_body counts.
    signers = [d.domain for d in dkim
               if d.result == "pass" and d.covers_whole_body and _aligned(d.domain, domain, adkim)]
    envelope_domain = mail_from.strip().removeprefix("<").removesuffix(">").rpartition("@")[2]
    envelope_domain = envelope_domain.rstrip(".").lower()
    spf_aligned = (spf.result == "pass" and spf.identity == "mailfrom"
                   and spf.domain.lower() == envelope_domain
                   and _aligned(envelope_domain, domain, aspf))

    policy = None
    if record is not None:
        # RFC 7489 6.3 sp=: applies to subdomains of the domain whose record was found.
        subdomain = lookup.found_at == org and domain != org
        policy = record.sp if subdomain and record.sp else record.p

    result: Literal["pass", "fail", "none", "temperror", "permerror"]
    where = f"record at _dmarc.{lookup.found_at}"
    if not domain:
        result, detail = "permerror", "no From domain"
    elif lookup.error:
        result, detail = lookup.error, lookup.detail
    elif record is None:
        result, detail = "none", lookup.detail
    elif signers or spf_aligned:
        result = "pass"
        how = []
        if signers:
            how.append(f"DKIM d={signers[0]}")
        if spf_aligned:
            how.append(f"SPF {envelope_domain}")
        detail = f"aligned {' and '.join(how)} (adkim={adkim}, aspf={aspf}); {where}"
    else:
        result = "fail"
        detail = f"no aligned DKIM or SPF pass (adkim={adkim}, aspf={aspf}); {where}"
    return DmarcResult(result=result, domain=domain, org_domain=org, policy=policy,
                       adkim=adkim, aspf=aspf, dkim_aligned=bool(signers), spf_aligned=spf_aligned,
                       detail=detail)


async def evaluate_dmarc(from_domain: str, dkim: list[DkimResult], spf: SpfResult, mail_from: str,
                         resolver: Resolver) -> DmarcResult:
    """DMARC for the RFC 5322 From domain given the DKIM and SPF results (RFC 7489 6.6)."""
    lookup = await discover_policy(from_domain, resolver)
    return judge(from_domain, dkim, spf, mail_from, lookup)
