"""authenticate(): DKIM, SPF and DMARC together over one resolver, as the gate calls it."""

from __future__ import annotations

import pytest

from appliance.mailauth import authenticate

NOW = 1_736_157_600


def zone(key, *extra):
    return [
        key.txt("s1", "example.com"),
        ("example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=reject"),
        *extra,
    ]


async def run(raw, resolver, *, ip="192.0.2.5", mail_from="bounce@example.com",
              from_domain="example.com"):
    return await authenticate(raw, client_ip=ip, helo="mx.example.com", mail_from=mail_from,
                              from_domain=from_domain, resolver=resolver, now=NOW)


async def test_signed_message_from_an_authorised_host_passes_everything(
        dns_zone, resolver_for, rsa_key, message):
    raw = rsa_key.sign(message(), domain="example.com", selector="s1", timestamp=NOW)
    server = dns_zone(zone(rsa_key))
    auth = await run(raw, resolver_for(server))
    assert (auth.spf.result, auth.dkim_summary, auth.dmarc.result) == ("pass", "pass", "pass")
    assert auth.dmarc.dkim_aligned and auth.dmarc.spf_aligned
    assert auth.dmarc.policy == "reject"


async def test_lookalike_signer_and_envelope_prove_nothing_about_from(
        dns_zone, resolver_for, ed25519_key, message):
    raw = ed25519_key.sign(message(), domain="examp1e.com", selector="s1", timestamp=NOW)
    server = dns_zone(zone(ed25519_key, ed25519_key.txt("s1", "examp1e.com"),
                           ("examp1e.com", "TXT", "v=spf1 +all")))
    auth = await run(raw, resolver_for(server), mail_from="x@examp1e.com")
    assert auth.dkim_summary == "pass" and auth.spf.result == "pass"
    assert not auth.dmarc.dkim_aligned and not auth.dmarc.spf_aligned
    assert auth.dmarc.result == "fail"


@pytest.mark.parametrize("how", ["timeout", "servfail"])
async def test_dns_trouble_is_temperror_everywhere_never_none_or_pass(
        dns_zone, resolver_for, rsa_key, message, how):
    raw = rsa_key.sign(message(), domain="example.com", selector="s1", timestamp=NOW)
    server = dns_zone(zone(rsa_key))
    for name in ("s1._domainkey.example.com", "example.com", "_dmarc.example.com"):
        server.fail(name, how=how)
    auth = await run(raw, resolver_for(server, timeout=0.2))
    assert [d.result for d in auth.dkim] == ["temperror"]
    assert auth.spf.result == "temperror"
    assert auth.dmarc.result == "temperror"
    assert not auth.dmarc.dkim_aligned and not auth.dmarc.spf_aligned


async def test_appended_text_under_an_l_signature_is_not_dkim_aligned(
        dns_zone, resolver_for, rsa_key, message):
    raw = rsa_key.sign(message(), domain="example.com", selector="s1", timestamp=NOW, length=True)
    raw += b"\nP.S. Wire the money to account 1234.\n"
    server = dns_zone(zone(rsa_key))
    auth = await run(raw, resolver_for(server), ip="198.51.100.1")  # SPF fails too
    assert auth.dkim[0].result == "pass" and not auth.dkim[0].covers_whole_body
    assert not auth.dmarc.dkim_aligned
    assert auth.dmarc.result == "fail"


async def test_lookups_are_shared_through_the_cache(dns_zone, resolver_for, rsa_key, message):
    raw = rsa_key.sign(message(), domain="example.com", selector="s1", timestamp=NOW)
    server = dns_zone(zone(rsa_key))
    resolver = resolver_for(server)
    first = await run(raw, resolver)
    second = await run(raw, resolver)
    assert first == second
    assert len(server.queries) == 3  # key, SPF record, DMARC record: once each
