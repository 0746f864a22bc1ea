"""The manifest written out: JSON, a BIND snippet that dnspython reads back to the same records, a table."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import dns.zone
import msgspec

from appliance.domains.keys import DkimPublicKey
from appliance.domains.manifest import DnsManifest, DnsRecord, manifest
from appliance.domains.render import render, to_bind, to_json, to_table
from tests.domains.conftest import DOMAIN, MX, facts


def zone_records(text: str) -> set[tuple[str, str, str]]:
    """(absolute name, type, value as the manifest spells it) of every record in a BIND snippet."""
    zone = dns.zone.from_text(text, origin=DOMAIN, relativize=False, check_origin=False)
    found = set()
    for name, _ttl, rdata in zone.iterate_rdatas():
        kind = dns.rdatatype.to_text(rdata.rdtype)
        if kind == "TXT":
            value = b"".join(rdata.strings).decode()
        elif kind == "MX":
            value = f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
        elif kind == "CNAME":
            value = rdata.target.to_text(omit_final_dot=True)
        else:
            value = rdata.to_text()
        found.add((name.to_text(omit_final_dot=True), kind, value))
    return found


def as_tuples(records: tuple[DnsRecord, ...]) -> set[tuple[str, str, str]]:
    return {(r.name, r.type, r.value) for r in records}


def test_bind_snippet_parses_back_to_the_same_records(expected: DnsManifest) -> None:
    text = to_bind(expected)
    assert zone_records(text) == as_tuples(expected.records)
    assert "; 25.2.0.192.in-addr.arpa. IN PTR mx.example.test." in text


def test_bind_splits_long_txt_values_into_255_byte_strings(expected: DnsManifest) -> None:
    zone = dns.zone.from_text(to_bind(expected), origin=DOMAIN, check_origin=False)
    rdataset = zone.find_rdataset("appliance-rsa._domainkey", "TXT")
    strings = next(iter(rdataset)).strings
    assert len(strings) > 1 and all(len(s) <= 255 for s in strings) and len(strings[0]) == 255


def test_bind_leaves_records_of_another_zone_as_comments(dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    m = manifest(DOMAIN, facts(dkim_keys, mx="mail.provider.example"))
    text = to_bind(m)
    in_zone = {r for r in m.records if r.name == DOMAIN or r.name.endswith("." + DOMAIN)}
    assert zone_records(text) == as_tuples(tuple(in_zone))
    assert "; mail.provider.example. 3600 IN A 192.0.2.25" in text


def test_json_decodes_back_to_the_manifest(expected: DnsManifest) -> None:
    assert msgspec.json.decode(to_json(expected), type=DnsManifest) == expected
    assert b'"purpose":"mx-address"' in to_json(expected)
    assert render(expected, "json") == to_json(expected).decode()


def test_table_has_relative_and_absolute_names_value_ttl_and_note(expected: DnsManifest) -> None:
    text = to_table(expected)
    lines = text.splitlines()
    assert lines[2].split() == ["TYPE", "NAME", "ABSOLUTE", "NAME", "VALUE", "TTL", "NOTE"]
    dmarc = next(line for line in lines if line.startswith("TXT") and "_dmarc" in line)
    assert dmarc.split()[:3] == ["TXT", "_dmarc", f"_dmarc.{DOMAIN}."]
    assert "v=DMARC1; p=quarantine;" in dmarc and " 3600 " in dmarc
    rsa = next(r for r in expected.records if r.name.startswith("appliance-rsa."))
    assert rsa.value in text  # unsplit, as a provider's form takes it
    mx = next(line for line in lines if line.startswith("MX"))
    assert mx.split()[:3] == ["MX", "@", f"{DOMAIN}."] and f"10 {MX}" in mx
    ptr = next(line for line in lines if line.startswith("PTR"))
    assert "25.2.0.192.in-addr.arpa." in ptr and "VPS provider" in ptr
    assert render(expected, "table") == text
