"""The manifest (pure): which records a domain needs, with and without a known public address."""

from __future__ import annotations

from appliance.domains.keys import DkimPublicKey
from appliance.domains.manifest import DnsManifest, manifest
from tests.domains.conftest import ADDRESS, DOMAIN, MX, facts


def by_purpose(m: DnsManifest) -> dict[str, list[tuple[str, str, str]]]:
    found: dict[str, list[tuple[str, str, str]]] = {}
    for r in m.records:
        found.setdefault(r.purpose, []).append((r.name, r.type, r.value))
    return found


def test_with_an_address_every_record_points_at_it(expected: DnsManifest,
                                                   dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    records = by_purpose(expected)
    assert records["mx"] == [(DOMAIN, "MX", f"10 {MX}")]
    assert records["mx-address"] == [(MX, "A", ADDRESS)]
    assert records["spf"] == [(DOMAIN, "TXT", f"v=spf1 ip4:{ADDRESS} -all")]
    assert records["dmarc"] == [(f"_dmarc.{DOMAIN}", "TXT",
                                 f"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{DOMAIN}; adkim=s; aspf=s")]
    assert records["mta-sts"] == [(f"_mta-sts.{DOMAIN}", "TXT", "v=STSv1; id=ABCDEF0123456789")]
    assert records["mta-sts-host"] == [(f"mta-sts.{DOMAIN}", "A", ADDRESS)]
    assert records["tls-rpt"] == [(f"_smtp._tls.{DOMAIN}", "TXT", f"v=TLSRPTv1; rua=mailto:dmarc-reports@{DOMAIN}")]
    rsa, ed = dkim_keys
    assert records["dkim"] == [
        (f"appliance-rsa._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=rsa; p={rsa.p}"),
        (f"appliance-ed25519._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=ed25519; p={ed.p}"),
    ]
    assert [(p.address, p.name, p.target) for p in expected.ptr] == [(ADDRESS, "25.2.0.192.in-addr.arpa", MX)]
    assert "VPS provider" in expected.ptr[0].note
    assert expected.notes == ()


def test_without_an_address_spf_names_the_mx_and_mta_sts_is_a_cname(dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    m = manifest(DOMAIN, facts(dkim_keys, addresses=()))
    records = by_purpose(m)
    assert records["spf"] == [(DOMAIN, "TXT", "v=spf1 mx -all")]
    assert records["mta-sts-host"] == [(f"mta-sts.{DOMAIN}", "CNAME", MX)]
    assert "mx-address" not in records and m.ptr == ()
    assert any("public_address" in note for note in m.notes)


def test_an_ipv6_address_is_an_aaaa_record_and_ip6_in_spf(dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    m = manifest(DOMAIN, facts(dkim_keys, addresses=("2001:DB8::25",)))
    records = by_purpose(m)
    assert records["mx-address"] == [(MX, "AAAA", "2001:db8::25")]
    assert records["spf"] == [(DOMAIN, "TXT", "v=spf1 ip6:2001:db8::25 -all")]
    assert m.ptr[0].name.endswith(".ip6.arpa")


def test_no_keys_yet_is_said_in_the_notes() -> None:
    m = manifest(DOMAIN, facts(()))
    assert "dkim" not in by_purpose(m)
    assert any("no DKIM keys" in note for note in m.notes)


def test_an_mx_host_in_another_zone_is_said_so(dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    m = manifest(DOMAIN, facts(dkim_keys, mx="mail.provider.example"))
    address = next(r for r in m.records if r.purpose == "mx-address")
    assert address.name == "mail.provider.example" and "zone of mail.provider.example" in address.note


def test_a_host_name_that_is_not_public_is_said_so(dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    m = manifest(DOMAIN, facts(dkim_keys, mx="localhost"))
    assert any("'localhost' is not a public host name" in note for note in m.notes)
    assert not any("public host name" in note for note in manifest(DOMAIN, facts(dkim_keys)).notes)
