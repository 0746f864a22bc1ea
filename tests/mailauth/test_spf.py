"""SPF through pyspf, every lookup answered by the loopback DNS server via our resolver."""

from __future__ import annotations

import asyncio

import pytest

from appliance.mailauth import check_spf

ZONE = [
    ("example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.provider.example mx -all"),
    ("example.com", "TXT", "google-site-verification=abc"),  # not SPF: ignored
    ("example.com", "MX", "10 mx.example.com."),
    ("mx.example.com", "A", "198.51.100.25"),
    ("mx.example.com", "TXT", "v=spf1 a -all"),
    ("mx.example.com", "AAAA", "2001:db8::25"),
    ("_spf.provider.example", "TXT", ("v=spf1 ip4:203.0.113.0/24", " ip6:2001:db8:1::/48 ~all")),
    ("soft.example", "TXT", "v=spf1 ~all"),
    ("neutral.example", "TXT", "v=spf1 ?all"),
    ("nospf.example", "A", "192.0.2.1"),
    ("two.example", "TXT", "v=spf1 -all"),
    ("two.example", "TXT", "v=spf1 +all"),
    ("broken.example", "TXT", "v=spf1 ip4:192.0.2.300 -all"),
    ("slowinclude.example", "TXT", "v=spf1 include:slow.example -all"),
    ("slow.example", "TXT", "v=spf1 +all"),
]


@pytest.mark.parametrize(("ip", "mail_from", "expected"), [
    ("192.0.2.10", "alice@example.com", "pass"),  # ip4
    ("203.0.113.9", "alice@example.com", "pass"),  # include, split TXT strings
    ("2001:db8:1::9", "alice@example.com", "pass"),  # ip6 in the include
    ("198.51.100.25", "alice@example.com", "pass"),  # mx
    ("198.51.100.99", "alice@example.com", "fail"),
    ("198.51.100.99", "bob@soft.example", "softfail"),
    ("198.51.100.99", "bob@neutral.example", "neutral"),
    ("198.51.100.99", "bob@nospf.example", "none"),
    ("198.51.100.99", "bob@nxdomain.example", "none"),
    ("198.51.100.99", "bob@two.example", "permerror"),  # RFC 7208 4.5
    ("198.51.100.99", "bob@broken.example", "permerror"),
])
async def test_mail_from_domain_policy_decides(dns_zone, resolver_for, ip, mail_from, expected):
    server = dns_zone(ZONE)
    result = await check_spf(ip, "mx.sender.example", mail_from, resolver_for(server))
    assert (result.result, result.identity) == (expected, "mailfrom")
    assert result.domain == mail_from.partition("@")[2]


async def test_null_sender_checks_the_helo_identity(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    resolver = resolver_for(server)
    result = await check_spf("198.51.100.25", "MX.example.com", "", resolver)
    assert (result.result, result.identity, result.domain) == ("pass", "helo", "mx.example.com")
    result = await check_spf("192.0.2.10", "mx.example.com", "<>", resolver)
    assert (result.result, result.identity) == ("fail", "helo")


async def test_null_sender_with_an_address_literal_helo_is_none(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    result = await check_spf("192.0.2.10", "[192.0.2.10]", "", resolver_for(server))
    assert (result.result, result.identity) == ("none", "helo")
    assert server.queries == []


async def test_angle_brackets_and_case_in_mail_from_are_ignored(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    result = await check_spf("192.0.2.10", "x.example", "<Alice@Example.COM>", resolver_for(server))
    assert (result.result, result.domain) == ("pass", "example.com")


async def test_every_lookup_goes_through_the_resolver_and_its_cache(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    resolver = resolver_for(server)
    for _ in range(3):
        result = await check_spf("198.51.100.25", "x.example", "alice@example.com", resolver)
        assert result.result == "pass"
    assert server.count("example.com", "TXT") == 1
    assert server.count("_spf.provider.example", "TXT") == 1
    assert server.count("example.com", "MX") == 1
    assert server.count("mx.example.com", "A") == 1


async def test_timeout_on_the_record_is_temperror_not_none(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    server.fail("example.com", "TXT", "timeout")
    result = await check_spf("192.0.2.10", "x.example", "alice@example.com",
                             resolver_for(server, timeout=0.2))
    assert result.result == "temperror"


async def test_timeout_inside_an_include_is_temperror(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    server.fail("slow.example", how="timeout")
    result = await check_spf("192.0.2.10", "x.example", "alice@slowinclude.example",
                             resolver_for(server, timeout=0.2))
    assert result.result == "temperror"


async def test_servfail_is_temperror(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    server.fail("example.com", "TXT", "servfail")
    result = await check_spf("192.0.2.10", "x.example", "alice@example.com", resolver_for(server))
    assert result.result == "temperror"


async def test_void_lookup_limit_is_enforced(dns_zone, resolver_for):
    mechanisms = " ".join(f"a:void{i}.example" for i in range(4))
    server = dns_zone([("voids.example", "TXT", f"v=spf1 {mechanisms} -all")])
    result = await check_spf("192.0.2.10", "x.example", "a@voids.example", resolver_for(server))
    assert result.result == "permerror"  # RFC 7208 4.6.4: more than two void lookups


async def test_invalid_client_address_is_permerror_and_asks_nothing(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    for bad in ("list", "999.1.1.1", ""):
        result = await check_spf(bad, "x.example", "alice@example.com", resolver_for(server))
        assert result.result == "permerror"
    assert server.queries == []


async def test_concurrent_checks_do_not_interfere(dns_zone, resolver_for):
    server = dns_zone(ZONE)
    resolver = resolver_for(server)
    results = await asyncio.gather(
        check_spf("192.0.2.10", "x.example", "alice@example.com", resolver),
        check_spf("192.0.2.10", "x.example", "bob@soft.example", resolver),
        check_spf("198.51.100.99", "x.example", "alice@example.com", resolver),
        check_spf("2001:db8::25", "mx.example.com", "", resolver),
    )
    assert [r.result for r in results] == ["pass", "softfail", "fail", "pass"]
