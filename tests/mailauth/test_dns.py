"""The caching resolver against a real DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from appliance.errors import DnsTemporaryError
from appliance.mailauth import DnsResolver, StaticResolver
from appliance.mailauth.dns import DEFAULT_NEGATIVE_TTL, parse_nameserver


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_txt_character_strings_of_one_record_are_joined_without_separator(dns_zone,
                                                                                resolver_for):
    server = dns_zone([
        ("split.example", "TXT", ("v=spf1 ip4:192.0.2.1", " -all")),
        ("long.example", "TXT", "v=DKIM1; p=" + "A" * 400),  # served as two 255-byte strings
        ("two.example", "TXT", "first"),
        ("two.example", "TXT", "second"),
    ])
    resolver = resolver_for(server)
    assert await resolver.query("split.example", "TXT") == ["v=spf1 ip4:192.0.2.1 -all"]
    assert await resolver.query("long.example", "TXT") == ["v=DKIM1; p=" + "A" * 400]
    assert sorted(await resolver.query("two.example", "TXT")) == ["first", "second"]


async def test_addresses_mx_and_names_come_back_as_text(dns_zone, resolver_for):
    server = dns_zone([
        ("host.example", "A", "192.0.2.7"),
        ("host.example", "AAAA", "2001:db8::7"),
        ("example", "MX", "10 mx1.example."),
        ("7.2.0.192.in-addr.arpa", "PTR", "host.example."),
        ("alias.example", "CNAME", "host.example."),
    ])
    resolver = resolver_for(server)
    assert await resolver.query("host.example", "A") == ["192.0.2.7"]
    assert await resolver.query("HOST.example.", "aaaa") == ["2001:db8::7"]
    assert await resolver.query("example", "MX") == ["10 mx1.example"]
    assert await resolver.query("7.2.0.192.in-addr.arpa", "PTR") == ["host.example"]
    assert await resolver.query("alias.example", "CNAME") == ["host.example"]
    assert await resolver.query("alias.example", "A") == ["192.0.2.7"]  # the chain is followed


async def test_nxdomain_and_nodata_are_empty_answers(dns_zone, resolver_for):
    server = dns_zone([("host.example", "A", "192.0.2.7")])
    resolver = resolver_for(server)
    assert await resolver.query("missing.example", "TXT") == []
    assert await resolver.query("host.example", "TXT") == []


async def test_timeout_is_a_temporary_error_never_an_empty_answer(dns_zone, resolver_for):
    server = dns_zone([("slow.example", "TXT", "v=spf1 -all")])
    server.fail("slow.example", how="timeout")
    with pytest.raises(DnsTemporaryError, match="timeout"):
        await resolver_for(server, timeout=0.2).query("slow.example", "TXT")


@pytest.mark.parametrize("how", ["servfail", "refused"])
async def test_servfail_and_refused_are_temporary_errors(dns_zone, resolver_for, how):
    server = dns_zone([("broken.example", "TXT", "v=spf1 -all")])
    server.fail("broken.example", "TXT", how)
    with pytest.raises(DnsTemporaryError):
        await resolver_for(server).query("broken.example", "TXT")


async def test_unreachable_server_is_a_temporary_error(dns_zone):
    server = dns_zone()
    address = server.address
    server.stop()
    with pytest.raises(DnsTemporaryError):
        await DnsResolver([address], timeout=0.2).query("example.com", "TXT")


async def test_answers_are_cached_for_their_ttl(dns_zone, resolver_for):
    server = dns_zone([("cached.example", "TXT", "hello", 60)])
    clock = Clock()
    resolver = resolver_for(server, clock=clock)
    assert await resolver.query("cached.example", "TXT") == ["hello"]
    assert await resolver.query("Cached.Example.", "TXT") == ["hello"]
    assert server.count("cached.example", "TXT") == 1
    clock.now += 61
    assert await resolver.query("cached.example", "TXT") == ["hello"]
    assert server.count("cached.example", "TXT") == 2


async def test_nxdomain_and_nodata_are_cached_for_the_soa_negative_ttl(dns_zone, resolver_for):
    server = dns_zone([("host.example", "A", "192.0.2.7")], negative_ttl=30)
    clock = Clock()
    resolver = resolver_for(server, clock=clock)
    for _ in range(3):
        assert await resolver.query("missing.example", "TXT") == []
        assert await resolver.query("host.example", "TXT") == []
    assert server.count("missing.example") == 1
    assert server.count("host.example", "TXT") == 1
    clock.now += 31
    await resolver.query("missing.example", "TXT")
    assert server.count("missing.example") == 2


async def test_negative_answers_without_soa_get_the_default_ttl(dns_zone, resolver_for):
    server = dns_zone(negative_ttl=None)
    clock = Clock()
    resolver = resolver_for(server, clock=clock)
    await resolver.query("missing.example", "TXT")
    clock.now += DEFAULT_NEGATIVE_TTL - 1
    await resolver.query("missing.example", "TXT")
    assert server.count("missing.example") == 1
    clock.now += 2
    await resolver.query("missing.example", "TXT")
    assert server.count("missing.example") == 2


async def test_temporary_errors_are_not_cached(dns_zone, resolver_for):
    server = dns_zone([("flaky.example", "TXT", "v=spf1 -all")])
    server.fail("flaky.example", how="servfail")
    resolver = resolver_for(server)
    with pytest.raises(DnsTemporaryError):
        await resolver.query("flaky.example", "TXT")
    server.heal()
    assert await resolver.query("flaky.example", "TXT") == ["v=spf1 -all"]


async def test_concurrent_identical_queries_share_one_lookup(dns_zone, resolver_for):
    server = dns_zone([("busy.example", "TXT", "x")])
    resolver = resolver_for(server)
    answers = await asyncio.gather(*(resolver.query("busy.example", "TXT") for _ in range(5)))
    assert answers == [["x"]] * 5
    assert server.count("busy.example") == 1


async def test_truncated_udp_answer_is_fetched_again_over_tcp(dns_zone, resolver_for):
    records = [("big.example", "TXT", f"record {i} " + "x" * 200) for i in range(5)]
    server = dns_zone(records)
    answer = await resolver_for(server).query("big.example", "TXT")
    assert len(answer) == 5
    assert ("big.example", "TXT", "tcp") in server.queries


async def test_names_that_cannot_exist_are_empty_without_asking(dns_zone, resolver_for):
    server = dns_zone()
    resolver = resolver_for(server)
    assert await resolver.query("a..b.example", "TXT") == []
    assert await resolver.query("x" * 64 + ".example", "TXT") == []
    assert await resolver.query("", "TXT") == []
    assert server.queries == []


async def test_unknown_record_type_is_a_value_error(dns_zone, resolver_for):
    with pytest.raises(ValueError, match="BOGUS"):
        await resolver_for(dns_zone()).query("example.com", "BOGUS")


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:db8::1]", ("2001:db8::1", 53)),
    ("::1", ("::1", 53)),
])
def test_nameservers_are_host_and_port(text, expected):
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:99999",
                                  "127.0.0.1:x", "[::1", "[::1]5353", "", "127.0.0.1:"])
def test_bad_nameservers_are_refused_naming_the_value(text):
    with pytest.raises(ValueError, match="nameserver") as caught:
        DnsResolver([text])
    assert repr(text) in str(caught.value)


async def test_static_resolver_answers_from_its_table_and_fails_as_told():
    resolver = StaticResolver({("Example.com.", "txt"): ["v=spf1 -all"]},
                              failing=[("down.example", "*")])
    assert await resolver.query("example.com", "TXT") == ["v=spf1 -all"]
    assert await resolver.query("other.example", "TXT") == []
    with pytest.raises(DnsTemporaryError):
        await resolver.query("down.example", "A")
    assert resolver.queries[0] == ("example.com", "TXT")


async def test_names_forced_to_nxdomain_hide_their_records(dns_zone, resolver_for):
    server = dns_zone([("gone.example", "TXT", "v=spf1 -all")])
    server.fail("gone.example", "TXT", "nxdomain")
    assert await resolver_for(server).query("gone.example", "TXT") == []


@pytest.mark.parametrize("how", ["truncated", "truncated_partial", "truncated_close"])
async def test_answer_truncated_over_udp_and_tcp_is_a_temporary_error(dns_zone, resolver_for, how):
    # TC=1 over UDP sends the client to TCP; if TCP cannot give the whole answer either
    # (TC=1 again, with nothing or only part of it, or no reply), nothing is known.
    records = [("cut.example", "TXT", f"record {i}") for i in range(3)]
    server = dns_zone(records)
    server.fail("cut.example", "TXT", how)
    resolver = resolver_for(server)
    with pytest.raises(DnsTemporaryError):
        await resolver.query("cut.example", "TXT")
    assert {proto for _, _, proto in server.queries} == {"udp", "tcp"}
    server.heal()  # and the failure was not cached as an empty answer
    assert len(await resolver.query("cut.example", "TXT")) == 3


async def test_truncated_answer_for_a_missing_name_is_not_nxdomain(dns_zone, resolver_for):
    server = dns_zone([("other.example", "TXT", "x")])
    server.fail("missing.example", "TXT", "truncated")
    with pytest.raises(DnsTemporaryError):
        await resolver_for(server).query("missing.example", "TXT")
