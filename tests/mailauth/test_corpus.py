"""Real messages from the shared corpus, verified against their own DNS served over loopback."""

from __future__ import annotations

import email
import email.utils
import re
import time
from dataclasses import dataclass

import pytest

from appliance.mailauth import DnsResolver, authenticate, verify_dkim
from tests.corpus import corpus_path, read_keyed_message, read_smtp_transcript, read_zonefile
from tests.dnsserver import serve_zone

DKIM_005_SIGNED_AT = 1667843664  # 005 carries x=: judge it as of its signing time


@pytest.mark.parametrize("name", ["001", "002", "003", "004", "005", "006"])
async def test_mail_auth_dkim_messages_verify_with_their_records(name):
    corpus = read_keyed_message(corpus_path("mail-auth-dkim", f"{name}.txt"))
    now = DKIM_005_SIGNED_AT if name == "005" else time.time()
    with serve_zone(corpus.zone()) as server:
        results = await verify_dkim(corpus.message, DnsResolver([server.address]), now)
    assert results, "every message in this set is signed"
    assert [r.result for r in results] == ["pass"] * len(results), [r.detail for r in results]
    assert all(r.covers_whole_body for r in results)


async def test_mail_auth_dkim_001_has_an_ed25519_and_an_rsa_signature():
    corpus = read_keyed_message(corpus_path("mail-auth-dkim", "001.txt"))
    with serve_zone(corpus.zone()) as server:
        results = await verify_dkim(corpus.message, DnsResolver([server.address]), time.time())
    assert [(r.algorithm, r.selector, r.result) for r in results] == [
        ("ed25519-sha256", "brisbane", "pass"), ("rsa-sha256", "test", "pass")]


async def test_mail_auth_dkim_005_is_expired_today():
    corpus = read_keyed_message(corpus_path("mail-auth-dkim", "005.txt"))
    with serve_zone(corpus.zone()) as server:
        [result] = await verify_dkim(corpus.message, DnsResolver([server.address]), time.time())
    assert result.result == "permerror"
    assert "expired" in result.detail


async def test_list_resigned_message_keeps_the_list_signature_and_breaks_the_authors():
    corpus = read_keyed_message(corpus_path("mail-auth-arc", "001.txt"))
    with serve_zone(corpus.zone()) as server:
        resolver = DnsResolver([server.address])
        auth = await authenticate(corpus.message, client_ip="192.0.2.1", helo="mail.example",
                                  mail_from="", from_domain="stalw.art", resolver=resolver,
                                  now=time.time())
    assert [(r.domain, r.result) for r in auth.dkim] == [
        ("ietf.org", "pass"), ("ietf.org", "pass"), ("stalw.art", "fail")]
    assert not auth.dmarc.dkim_aligned  # the list vouches for itself, not for the author


# -- auth-milter: messages, its offline zone file, and the envelopes of its test sessions ------

@dataclass(frozen=True)
class Case:
    message: str
    session: str
    dkim: list[str]
    spf: str | None
    dmarc: str
    dkim_aligned: bool
    spf_aligned: bool
    deviation: str = ""
    """Where we deliberately differ from the milter's own Authentication-Results."""


# google._domainkey.marcbradshaw.net carries t=y (testing): RFC 6376 3.6.1 says a verifier MUST
# NOT treat such mail differently from unsigned mail, so its signatures are neutral for us and
# never aligned; the milter reports them as pass/fail. What the signature check alone found is
# still compared with the milter's words (``testing_key``).
_TESTING = "google._domainkey.marcbradshaw.net has t=y: neutral for us, the milter's verdict for it"

CASES = [
    Case("google_apps_good", "google_apps_good", ["neutral"], "pass", "pass", False, True,
         deviation=_TESTING),
    Case("google_apps_good", "google_apps_good_spf_fail", ["neutral"], "softfail", "fail",
         False, False, deviation=_TESTING),
    Case("google_apps_good", "google_apps_good_cn", ["neutral"], "pass", "pass", False, True,
         deviation=_TESTING),
    # Null sender: SPF checks the HELO identity, which DMARC alignment does not use (our rule).
    Case("google_apps_good", "google_apps_good_nofrom", ["neutral"], "pass", "fail", False, False,
         deviation=_TESTING),
    Case("google_apps_good_sanitize", "google_apps_good_sanitize", ["neutral"], "pass", "pass",
         False, True, deviation=_TESTING),
    Case("google_apps_noxgdkim", "google_apps_noxgdkim_hide_none", ["neutral"], "pass", "pass",
         False, True, deviation=_TESTING),
    Case("google_apps_bad", "google_apps_bad", ["neutral"], "pass", "pass", False, True,
         deviation=_TESTING),
    Case("google_apps_bad", "google_apps_bad_spf_fail", ["neutral"], "softfail", "fail", False,
         False, deviation=_TESTING),
    Case("google_apps_bad_space", "google_apps_bad_space", ["neutral"], None, "fail", False, False,
         deviation="its MAIL FROM:<marc@ marcbradshaw.net> is unusable to us; " + _TESTING),
    Case("google_apps_nodkim", "google_apps_nodkim", [], "pass", "pass", False, True),
    Case("google_apps_nodkim", "google_apps_nodkim_spf_fail", [], "softfail", "fail", False, False),
    Case("dmarc_reject", "dmarc_reject", [], "fail", "fail", False, False),
    Case("dmarc_reject_case", "dmarc_reject_case", [], "fail", "fail", False, False),
    Case("dmarc_reject_wl", "dmarc_reject_wl", ["policy"], "softfail", "fail", False, False,
         deviation="rsa-sha1 signature: the milter says pass, RFC 8301 says not acceptable"),
    Case("list", "list", [], "fail", "none", False, False),
    Case("longlines", "longlines", [], "pass", "none", False, False),
    Case("transparency", "transparency", [], "fail", "none", False, False),
]


@pytest.fixture(scope="module")
def milter_zone():
    zone = read_zonefile(corpus_path("auth-milter", "zonefile"))
    server = zone.serve().start()
    yield server
    server.stop()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.message}@{c.session}")
async def test_auth_milter_messages_get_the_results_their_zone_implies(milter_zone, case):
    raw = corpus_path("auth-milter", "messages", f"{case.message}.eml").read_bytes()
    transcript = corpus_path("auth-milter", "expected", f"{case.session}.smtp.eml")
    session = read_smtp_transcript(transcript)
    from_domain = email.utils.parseaddr(email.message_from_bytes(raw)["From"])[1].rpartition("@")[2]
    auth = await authenticate(raw, client_ip=session.client_ip, helo=session.helo,
                              mail_from=session.mail_from, from_domain=from_domain,
                              resolver=DnsResolver([milter_zone.address]), now=time.time())
    assert [d.result for d in auth.dkim] == case.dkim, [d.detail for d in auth.dkim]
    if case.spf is not None:
        assert auth.spf.result == case.spf, auth.spf.detail
    assert auth.dmarc.result == case.dmarc, auth.dmarc.detail
    aligned = (auth.dmarc.dkim_aligned, auth.dmarc.spf_aligned)
    assert aligned == (case.dkim_aligned, case.spf_aligned)

    # The milter's own verdicts, for the same message, envelope and zone, agree with ours.
    milter = session.authentication_results
    if case.deviation.endswith(_TESTING):
        # Under t=y our check still ran: what it found alone is what the milter reports.
        alone = [re.search(r"verified alone: (\w+)", d.detail) for d in auth.dkim]
        assert [m[1] if m else None for m in alone] == milter["dkim"]
    if not case.deviation:
        assert milter.get("dkim", ["none"]) == (case.dkim or ["none"])
        assert milter.get("spf") in (None, [case.spf])
        assert milter.get("dmarc") == [case.dmarc]


def test_zonefile_reader_keeps_errors_and_multi_string_txt():
    zone = read_zonefile(corpus_path("auth-milter", "zonefile"))
    assert ("4.3.2.1.in-addr.arpa", "PTR", "NXDOMAIN") in zone.errors
    [key] = [r for r in zone.records if r.name == "tfe2._domainkey.marcbradshaw.net"]
    assert isinstance(key.value, tuple) and len(key.value) == 3
    assert key.value[0] == "v=DKIM1; k=rsa; "
