"""Verification: TXT records compared by their tags (pure), and whole domains checked over a real DNS server."""

from __future__ import annotations

from datetime import datetime

from appliance.domains.keys import DkimPublicKey
from appliance.domains.manifest import DnsManifest, DnsRecord, manifest
from appliance.domains.verify import Answer, check_domain, check_ptr, check_record, questions, verify_domain
from appliance.mailauth.dns import DnsResolver
from tests.dnsserver import DnsTestServer, Record
from tests.domains.conftest import ADDRESS, DOMAIN, MX, facts

NOW = datetime(2026, 12, 3, 9, 0, 0)


def record(expected: DnsManifest, purpose: str) -> DnsRecord:
    return next(r for r in expected.records if r.purpose == purpose)


def state(expected: DnsManifest, purpose: str, *values: str) -> str:
    return check_record(record(expected, purpose), Answer(values=values)).state


# -- SPF -----------------------------------------------------------------------------------------------------------

def test_spf_mechanisms_match_in_any_order_and_spelling(expected: DnsManifest) -> None:
    assert state(expected, "spf", f"v=spf1 ip4:{ADDRESS} -all") == "ok"
    assert state(expected, "spf", f"v=spf1 include:_spf.mail.example +ip4:{ADDRESS}/32 -all") == "ok"
    assert state(expected, "spf", "google-site-verification=abc", f"V=SPF1 IP4:{ADDRESS} -ALL") == "ok"


def test_spf_without_our_address_or_with_a_softer_all_is_wrong(expected: DnsManifest) -> None:
    wrong = check_record(record(expected, "spf"), Answer(values=("v=spf1 ip4:198.51.100.7 -all",)))
    assert wrong.state == "wrong" and f"ip4:{ADDRESS}" in wrong.advice
    assert state(expected, "spf", f"v=spf1 ip4:{ADDRESS} ~all") == "wrong"


def test_two_spf_records_are_wrong_even_if_one_is_right(expected: DnsManifest) -> None:
    found = check_record(record(expected, "spf"), Answer(values=(f"v=spf1 ip4:{ADDRESS} -all", "v=spf1 mx -all")))
    assert found.state == "wrong" and "2 SPF records" in found.advice


def test_no_spf_record_is_missing_and_says_what_to_add(expected: DnsManifest) -> None:
    found = check_record(record(expected, "spf"), Answer(values=("some-other=txt",)))
    assert found.state == "missing" and f"v=spf1 ip4:{ADDRESS} -all" in found.advice


# -- DKIM ----------------------------------------------------------------------------------------------------------

def test_dkim_compares_the_key_not_the_bytes(expected: DnsManifest) -> None:
    rsa = record(expected, "dkim")
    p = rsa.value.split("p=")[1]
    spaced = f"k=rsa;  v=DKIM1 ; p={p[:100]} {p[100:]}"
    assert check_record(rsa, Answer(values=(spaced,))).state == "ok"


def test_another_dkim_key_is_wrong(expected: DnsManifest) -> None:
    rsa = record(expected, "dkim")
    ed = next(r for r in expected.records if r.name.startswith("appliance-ed25519."))
    other_p = ed.value.split("p=")[1]
    found = check_record(rsa, Answer(values=(f"v=DKIM1; k=rsa; p={other_p}",)))
    assert found.state == "wrong" and "p= differs" in found.advice
    assert check_record(rsa, Answer(values=(ed.value,))).state == "wrong"  # k=ed25519 where rsa is published
    assert check_record(rsa, Answer()).state == "missing"


# -- DMARC, MTA-STS, TLS-RPT --------------------------------------------------------------------------------------

def test_dmarc_tags_match_in_any_order_and_a_stricter_policy_is_ok(expected: DnsManifest) -> None:
    rua = f"mailto:dmarc-reports@{DOMAIN}"
    assert state(expected, "dmarc", f"v=DMARC1; aspf=s; adkim=s; rua={rua}; p=quarantine") == "ok"
    assert state(expected, "dmarc", f"v=DMARC1; p=reject; rua=mailto:other@x.example,{rua.upper()}!10m; "
                                     "adkim=s; aspf=s; pct=100") == "ok"


def test_dmarc_with_a_weaker_policy_or_without_our_reports_is_wrong(expected: DnsManifest) -> None:
    rua = f"mailto:dmarc-reports@{DOMAIN}"
    weak = check_record(record(expected, "dmarc"), Answer(values=(f"v=DMARC1; p=none; rua={rua}; adkim=s; aspf=s",)))
    assert weak.state == "wrong" and "p=none" in weak.advice
    assert state(expected, "dmarc", "v=DMARC1; p=quarantine; adkim=s; aspf=s") == "wrong"
    assert state(expected, "dmarc", f"v=DMARC1; p=quarantine; rua={rua}") == "wrong"  # relaxed alignment
    assert state(expected, "dmarc", f"v=DMARC1; p=reject; rua={rua}; adkim=s; aspf=s",
                 f"v=DMARC1; p=quarantine; rua={rua}; adkim=s; aspf=s") == "wrong"


def test_mta_sts_and_tls_rpt_by_tags(expected: DnsManifest) -> None:
    assert state(expected, "mta-sts", "v=STSv1;id=ABCDEF0123456789;") == "ok"
    assert state(expected, "mta-sts", "v=STSv1; id=OLD") == "wrong"
    assert state(expected, "mta-sts") == "missing"
    assert state(expected, "tls-rpt", f"v=TLSRPTv1;rua=mailto:DMARC-reports@{DOMAIN}") == "ok"
    assert state(expected, "tls-rpt", "v=TLSRPTv1; rua=mailto:someone@else.example") == "wrong"


# -- MX, addresses, PTR, unknown -----------------------------------------------------------------------------------

def test_mx_must_be_ours_alone(expected: DnsManifest) -> None:
    assert state(expected, "mx", f"5 {MX.upper()}.") == "ok"
    other = check_record(record(expected, "mx"), Answer(values=(f"10 {MX}", "20 backup.example")))
    assert other.state == "wrong" and "backup.example" in other.advice
    assert state(expected, "mx", "10 elsewhere.example") == "wrong"


def test_ptr_names_the_mx_host(expected: DnsManifest) -> None:
    advice = expected.ptr[0]
    assert check_ptr(advice, Answer(values=(MX,))).state == "ok"
    wrong = check_ptr(advice, Answer(values=("vps-123.provider.example",)))
    assert wrong.state == "wrong" and "VPS provider" in wrong.advice
    assert check_ptr(advice, Answer()).state == "missing"


def test_a_failed_lookup_is_unknown_not_missing(expected: DnsManifest) -> None:
    found = check_record(record(expected, "spf"), Answer(error="DNS timeout looking up example.test TXT"))
    assert found.state == "unknown" and "timeout" in found.advice


def test_a_domain_is_ok_only_when_every_record_is(expected: DnsManifest) -> None:
    answers = {q: Answer() for q in questions(expected)}
    assert check_domain(expected, answers, checked_at=NOW).ok is False


# -- over a real DNS server ----------------------------------------------------------------------------------------

def publish(server: DnsTestServer, expected: DnsManifest) -> None:
    for r in expected.records:
        server.add(Record(r.name, r.type, r.value))
    for p in expected.ptr:
        server.add(Record(p.name, "PTR", p.target))


async def test_verify_domain_finds_every_published_record_ok(dns_server: DnsTestServer,
                                                             expected: DnsManifest) -> None:
    publish(dns_server, expected)
    check = await verify_domain(expected, DnsResolver([dns_server.address], timeout=0.5), now=NOW)
    assert [r.state for r in check.records] == ["ok"] * (len(expected.records) + len(expected.ptr))
    assert check.ok and check.domain == DOMAIN and check.checked_at == NOW
    rsa = next(r for r in check.records if r.name.startswith("appliance-rsa."))
    assert rsa.found == (record(expected, "dkim").value,)  # the 255-byte strings joined again


async def test_verify_domain_reports_wrong_missing_and_unknown(dns_server: DnsTestServer,
                                                               expected: DnsManifest) -> None:
    publish(dns_server, expected)
    dns_server.remove(DOMAIN, "TXT")
    dns_server.add(Record(DOMAIN, "TXT", "v=spf1 ip4:198.51.100.7 -all"))  # wrong
    dns_server.remove(f"_dmarc.{DOMAIN}")  # missing
    dns_server.fail(f"_smtp._tls.{DOMAIN}", how="servfail")  # unknown
    check = await verify_domain(expected, DnsResolver([dns_server.address], timeout=0.5), now=NOW)
    states = {(r.name, r.type): r.state for r in check.records}
    assert states[(DOMAIN, "TXT")] == "wrong"
    assert states[(f"_dmarc.{DOMAIN}", "TXT")] == "missing"
    assert states[(f"_smtp._tls.{DOMAIN}", "TXT")] == "unknown"
    assert states[(DOMAIN, "MX")] == "ok" and states[(f"_mta-sts.{DOMAIN}", "TXT")] == "ok"
    assert not check.ok


async def test_a_name_that_does_not_answer_is_unknown(dns_server: DnsTestServer, expected: DnsManifest) -> None:
    publish(dns_server, expected)
    dns_server.fail(f"_dmarc.{DOMAIN}", how="timeout")
    check = await verify_domain(expected, DnsResolver([dns_server.address], timeout=0.3), now=NOW)
    dmarc = next(r for r in check.records if r.name == f"_dmarc.{DOMAIN}")
    assert dmarc.state == "unknown" and dmarc.found == ()


async def test_without_an_address_the_cname_and_spf_mx_are_checked(dns_server: DnsTestServer,
                                                                  dkim_keys: tuple[DkimPublicKey, ...]) -> None:
    expected = manifest(DOMAIN, facts(dkim_keys, addresses=()))
    publish(dns_server, expected)
    resolver = DnsResolver([dns_server.address], timeout=0.5)
    assert (await verify_domain(expected, resolver, now=NOW)).ok
    dns_server.remove(f"mta-sts.{DOMAIN}")
    dns_server.add(Record(f"mta-sts.{DOMAIN}", "CNAME", "elsewhere.example"))
    check = await verify_domain(expected, DnsResolver([dns_server.address], timeout=0.5), now=NOW)
    cname = next(r for r in check.records if r.name == f"mta-sts.{DOMAIN}")
    assert cname.state == "wrong" and cname.found == ("elsewhere.example",) and MX in cname.advice
