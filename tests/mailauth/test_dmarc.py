"""DMARC policy discovery over loopback DNS, and alignment of DKIM and SPF with the From domain."""

from __future__ import annotations

import pytest

from appliance.mailauth import DkimResult, SpfResult, evaluate_dmarc
from appliance.mailauth.dmarc import DmarcRecord, organizational_domain, parse_record

NO_SPF = SpfResult(result="none", domain="")


def dkim_pass(domain: str, *, whole_body: bool = True, result: str = "pass") -> DkimResult:
    return DkimResult(result=result, domain=domain, selector="s1",  # type: ignore[arg-type]
                      algorithm="rsa-sha256", covers_whole_body=whole_body)


def spf(result: str, domain: str, identity: str = "mailfrom") -> SpfResult:
    return SpfResult(result=result, domain=domain, identity=identity)  # type: ignore[arg-type]


async def test_aligned_dkim_signature_passes(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    result = await evaluate_dmarc("example.com", [dkim_pass("example.com")], NO_SPF, "",
                                  resolver_for(server))
    assert (result.result, result.policy, result.dkim_aligned, result.spf_aligned) == (
        "pass", "reject", True, False)


async def test_aligned_spf_pass_passes(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine")])
    result = await evaluate_dmarc("example.com", [], spf("pass", "example.com"),
                                  "bounce@example.com", resolver_for(server))
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", True, False)


async def test_signature_by_another_domain_is_not_aligned(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    result = await evaluate_dmarc("example.com", [dkim_pass("mailer.example.net")], NO_SPF, "",
                                  resolver_for(server))
    assert (result.result, result.dkim_aligned) == ("fail", False)


async def test_spf_pass_for_an_unrelated_envelope_domain_is_not_aligned(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    result = await evaluate_dmarc("example.com", [], spf("pass", "bulk-sender.example"),
                                  "bounces@bulk-sender.example", resolver_for(server))
    assert (result.result, result.spf_aligned) == ("fail", False)


async def test_spf_pass_for_the_helo_identity_is_not_aligned(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    result = await evaluate_dmarc("example.com", [], spf("pass", "example.com", "helo"), "",
                                  resolver_for(server))
    assert (result.result, result.spf_aligned) == ("fail", False)


async def test_failed_or_partial_dkim_signatures_are_not_aligned(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    signatures = [
        dkim_pass("example.com", result="fail"),
        dkim_pass("example.com", result="policy"),
        # Our rule, stricter than RFC 7489: l= leaving body unsigned vouches for nothing.
        dkim_pass("example.com", whole_body=False),
    ]
    result = await evaluate_dmarc("example.com", signatures, NO_SPF, "", resolver_for(server))
    assert (result.result, result.dkim_aligned) == ("fail", False)


@pytest.mark.parametrize(("record", "aligned"), [
    ("v=DMARC1; p=reject", True),  # adkim defaults to relaxed
    ("v=DMARC1; p=reject; adkim=r", True),
    ("v=DMARC1; p=reject; adkim=s", False),
])
async def test_subdomain_signer_aligns_only_in_relaxed_mode(dns_zone, resolver_for, record,
                                                             aligned):
    server = dns_zone([("_dmarc.example.com", "TXT", record)])
    result = await evaluate_dmarc("example.com", [dkim_pass("mail.example.com")], NO_SPF, "",
                                  resolver_for(server))
    assert result.dkim_aligned is aligned
    assert result.result == ("pass" if aligned else "fail")


@pytest.mark.parametrize(("record", "aligned"), [
    ("v=DMARC1; p=reject", True),
    ("v=DMARC1; p=reject; aspf=s", False),
])
async def test_subdomain_envelope_aligns_only_in_relaxed_mode(dns_zone, resolver_for, record,
                                                               aligned):
    server = dns_zone([("_dmarc.example.com", "TXT", record)])
    result = await evaluate_dmarc("example.com", [], spf("pass", "bounce.example.com"),
                                  "x@bounce.example.com", resolver_for(server))
    assert result.spf_aligned is aligned


async def test_strict_mode_still_aligns_an_exact_match_in_any_case(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s")])
    result = await evaluate_dmarc("Example.COM", [dkim_pass("example.com")],
                                  spf("pass", "example.com"), "a@EXAMPLE.com", resolver_for(server))
    assert (result.result, result.dkim_aligned, result.spf_aligned) == ("pass", True, True)


async def test_record_at_the_organizational_domain_applies_sp_to_a_subdomain(dns_zone,
                                                                             resolver_for):
    server = dns_zone([("_dmarc.example.co.uk", "TXT", "v=DMARC1; p=reject; sp=quarantine")])
    resolver = resolver_for(server)
    sub = await evaluate_dmarc("news.example.co.uk", [dkim_pass("news.example.co.uk")], NO_SPF, "",
                               resolver)
    assert (sub.result, sub.org_domain, sub.policy) == ("pass", "example.co.uk", "quarantine")
    assert server.count("_dmarc.news.example.co.uk") == 1  # asked first, NXDOMAIN
    org = await evaluate_dmarc("example.co.uk", [], NO_SPF, "", resolver)
    assert (org.result, org.policy) == ("fail", "reject")


async def test_subdomain_without_sp_gets_p(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")])
    result = await evaluate_dmarc("a.b.example.com", [], NO_SPF, "", resolver_for(server))
    assert (result.result, result.policy) == ("fail", "reject")


async def test_record_at_the_subdomain_itself_takes_precedence(dns_zone, resolver_for):
    server = dns_zone([
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; sp=reject"),
        ("_dmarc.lists.example.com", "TXT", "v=DMARC1; p=none"),
    ])
    result = await evaluate_dmarc("lists.example.com", [], NO_SPF, "", resolver_for(server))
    assert result.policy == "none"
    assert server.count("_dmarc.example.com") == 0


async def test_no_record_is_none_but_alignment_is_still_reported(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "not a dmarc record")])
    result = await evaluate_dmarc("mail.example.com", [dkim_pass("example.com")],
                                  spf("pass", "example.com"), "a@example.com", resolver_for(server))
    assert (result.result, result.policy) == ("none", None)
    assert (result.dkim_aligned, result.spf_aligned) == (True, True)  # relaxed mode


async def test_record_lookup_timeout_is_temperror_with_relaxed_alignment(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; adkim=s")])
    server.fail("_dmarc.example.com", how="timeout")
    result = await evaluate_dmarc("example.com", [dkim_pass("mail.example.com")], NO_SPF, "",
                                  resolver_for(server, timeout=0.2))
    assert result.result == "temperror"
    assert result.dkim_aligned  # relaxed, since the record (and its adkim=s) is unknown


async def test_org_domain_lookup_servfail_is_temperror(dns_zone, resolver_for):
    server = dns_zone([])
    server.fail("_dmarc.example.com", "TXT", "servfail")
    result = await evaluate_dmarc("sub.example.com", [dkim_pass("sub.example.com")], NO_SPF, "",
                                  resolver_for(server))
    assert result.result == "temperror"


async def test_two_dmarc_records_mean_no_policy(dns_zone, resolver_for):
    server = dns_zone([
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=reject"),
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=none"),
    ])
    result = await evaluate_dmarc("example.com", [dkim_pass("example.com")], NO_SPF, "",
                                  resolver_for(server))
    assert (result.result, result.policy) == ("none", None)


async def test_record_with_invalid_policy_is_permerror(dns_zone, resolver_for):
    server = dns_zone([("_dmarc.example.com", "TXT", "v=DMARC1; p=block")])
    result = await evaluate_dmarc("example.com", [dkim_pass("example.com")], NO_SPF, "",
                                  resolver_for(server))
    assert result.result == "permerror"


async def test_missing_from_domain_is_permerror(dns_zone, resolver_for):
    result = await evaluate_dmarc("", [], NO_SPF, "", resolver_for(dns_zone()))
    assert result.result == "permerror"


@pytest.mark.parametrize(("text", "expected"), [
    ("v=DMARC1; p=reject", DmarcRecord(p="reject")),
    ("v=DMARC1;p=Quarantine;sp=none;adkim=s;aspf=s;pct=50",
     DmarcRecord(p="quarantine", sp="none", adkim="s", aspf="s")),
    ("v = DMARC1 ; p = none ;", DmarcRecord(p="none")),
    ("v=DMARC1; p=reject; adkim=x", DmarcRecord(p="reject")),  # unknown mode: the default
    ("v=DMARC1; p=bogus; rua=mailto:d@example.com", DmarcRecord(p="none")),  # RFC 7489 6.6.3 (6)
    ("v=DMARC1", "invalid policy p=''"),
    ("p=reject; v=DMARC1", None),  # v= must come first
    ("v=dmarc1; p=reject", None),  # and match exactly
    ("v=spf1 -all", None),
    ("", None),
])
def test_record_parsing(text, expected):
    assert parse_record(text) == expected


@pytest.mark.parametrize(("domain", "org"), [
    ("example.com", "example.com"),
    ("a.b.Example.COM.", "example.com"),
    ("news.example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
    ("user.github.io", "user.github.io"),
])
def test_organizational_domain_follows_the_public_suffix_list(domain, org):
    assert organizational_domain(domain) == org
