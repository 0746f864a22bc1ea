"""The doctor's pure core: which ports, what a certificate, a DNS record, the test message or DMARC results
mean, and how the lines read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import msgspec

from appliance.config import ApplianceConfig
from appliance.doctor import Diagnosis, Finding, render
from appliance.doctor.checks import (
    CertificateSeen,
    MessageSeen,
    PortSeen,
    PortTarget,
    certificate_finding,
    dmarc_findings,
    dns_findings,
    message_finding,
    port_finding,
    port_targets,
)
from appliance.store.reports import SenderSummary

NOW = datetime(2026, 6, 1, 12, 0, 0)


def test_healthy_only_when_every_finding_is_ok() -> None:
    ok = Finding(check="ports", subject="127.0.0.1:25", state="ok", found="listening")
    warn = Finding(check="dmarc", subject="example.test", state="warn", found="3 failed")
    assert Diagnosis(findings=(ok,)).healthy
    assert not Diagnosis(findings=(ok, warn)).healthy


def test_a_failing_line_says_what_was_expected_and_what_to_do() -> None:
    text = render(Diagnosis(findings=(
        Finding(check="ports", subject="127.0.0.1:25", state="ok", found="listening"),
        Finding(check="dns", subject="MX example.test", state="fail", found="missing: nothing",
                expected="10 mx.example.test", advice="add MX 10 mx.example.test"),
    ), skipped=("message",)))
    lines = text.splitlines()
    assert lines[0] == "ok    ports  127.0.0.1:25: listening"
    assert lines[1] == "FAIL  dns    MX example.test: missing: nothing (expected 10 mx.example.test)"
    assert lines[2].strip() == "what to do: add MX 10 mx.example.test"
    assert lines[3] == "skipped: message"
    assert lines[-1] == "not healthy: 1 failing, 0 warning(s), 1 ok"


def test_an_all_green_diagnosis_says_so() -> None:
    ok = Finding(check="ports", subject="x", state="ok", found="listening", advice="never shown")
    assert render(Diagnosis(findings=(ok,))).splitlines() == ["ok    ports  x: listening", "healthy: all 1 check(s) ok"]


def test_sandbox_mode_checks_its_own_smtp_and_http_ports(make_config: Callable[..., ApplianceConfig]) -> None:
    config = make_config(mode="sandbox", smtp={"listen": "0.0.0.0:2525"}, http={"listen": "127.0.0.1:8025"})
    targets = port_targets(config)
    assert [(t.host, t.port, t.tls) for t in targets] == [("127.0.0.1", 2525, "none"), ("127.0.0.1", 8025, "none")]


def test_stalwart_mode_checks_the_standard_ports_and_port_adds_one(make_config: Callable[..., ApplianceConfig]
                                                                   ) -> None:
    config = make_config(mode="stalwart", http={"listen": "127.0.0.1:8025"})
    targets = {t.port: t for t in port_targets(config, [9999, 465])}
    assert sorted(targets) == [25, 443, 465, 587, 8025, 8080, 9999]
    assert targets[25].tls == "starttls" and targets[465].tls == "implicit" and targets[9999].tls == "none"


def test_a_closed_port_fails_with_advice_and_an_open_one_is_ok() -> None:
    target = PortTarget(host="127.0.0.1", port=25, purpose="SMTP (MX)", tls="starttls")
    closed = port_finding(PortSeen(host="127.0.0.1", port=25, listening=False, error="Connection refused"), target)
    assert closed.state == "fail" and "Connection refused" in closed.found and "appliance run" in closed.advice
    public = port_finding(PortSeen(host="192.0.2.1", port=25, listening=False, error="timed out"), target, public=True)
    assert public.state == "fail" and "firewall" in public.advice
    assert port_finding(PortSeen(host="127.0.0.1", port=25, listening=True), target).state == "ok"


def cert(days: float, names: tuple[str, ...] = ("mx.example.test",)) -> CertificateSeen:
    return CertificateSeen(host="127.0.0.1", port=465, hostname="mx.example.test",
                           not_after=NOW + timedelta(days=days), names=names)


def test_certificate_expiry_thresholds() -> None:
    assert certificate_finding(cert(90), NOW).state == "ok"
    assert certificate_finding(cert(20), NOW).state == "warn"
    soon = certificate_finding(cert(5), NOW)
    assert soon.state == "fail" and "5 days left" in soon.found and "renew" in soon.advice
    expired = certificate_finding(cert(-1), NOW)
    assert expired.state == "fail" and expired.found.startswith("expired")


def test_a_certificate_for_another_name_fails_and_a_wildcard_matches_one_label() -> None:
    other = certificate_finding(cert(90, ("localhost",)), NOW)
    assert other.state == "fail" and other.expected == "for mx.example.test"
    assert certificate_finding(cert(90, ("*.example.test",)), NOW).state == "ok"
    assert certificate_finding(cert(90, ("*.test",)), NOW).state == "fail"


def test_an_unreadable_certificate_fails() -> None:
    seen = CertificateSeen(host="127.0.0.1", port=25, hostname="mx.example.test",
                           error="the server does not offer STARTTLS")
    finding = certificate_finding(seen, NOW)
    assert finding.state == "fail" and finding.found == "the server does not offer STARTTLS"


class Record(msgspec.Struct, frozen=True):
    name: str
    type: str
    state: str
    expected: str
    found: tuple[str, ...]
    advice: str


class Check(msgspec.Struct, frozen=True):
    domain: str
    records: tuple[Record, ...]


def test_dns_records_ok_missing_wrong_and_unknown() -> None:
    check = Check(domain="example.test", records=(
        Record("example.test", "MX", "ok", "10 mx.example.test", ("10 mx.example.test",), ""),
        Record("_dmarc.example.test", "TXT", "missing", "v=DMARC1; p=quarantine", (), "add TXT _dmarc..."),
        Record("example.test", "TXT", "wrong", "v=spf1 mx -all", ("v=spf1 -all",), "SPF lacks mx"),
        Record("_smtp._tls.example.test", "TXT", "unknown", "v=TLSRPTv1", (), ""),
    ))
    states = [(f.subject, f.state) for f in dns_findings(check)]
    assert states == [("MX example.test", "ok"), ("TXT _dmarc.example.test", "fail"), ("TXT example.test", "fail"),
                      ("TXT _smtp._tls.example.test", "warn")]
    wrong = dns_findings(check)[2]
    assert wrong.found == "wrong: v=spf1 -all" and wrong.advice == "SPF lacks mx"


def test_the_test_message_is_ok_once_decided_whatever_the_decision() -> None:
    base = MessageSeen(agent="agent@example.test", message_id="<d@x>", reply="550 5.7.1 refused")
    decided = message_finding(msgspec.structs.replace(base, action="bounce", reason="no_rule"))
    assert decided.state == "ok" and "bounce (no_rule)" in decided.found
    lost = message_finding(msgspec.structs.replace(base, waited=15.0))
    assert lost.state == "fail" and "no decision in the audit after 15 s" in lost.found
    unsent = message_finding(MessageSeen(agent="agent@example.test", message_id="<d@x>", error="refused"))
    assert unsent.state == "fail"


def sender(ip: str, passed: int, failed: int, domain: str = "example.test") -> SenderSummary:
    return SenderSummary(header_from=domain, source_ip=ip, messages=passed + failed, dkim_pass=passed, dkim_fail=failed,
                         spf_pass=passed, spf_fail=failed, dmarc_pass=passed, dmarc_fail=failed,
                         disposition_none=passed + failed, disposition_quarantine=0, disposition_reject=0)


def test_senders_failing_dmarc_as_our_domain_warn() -> None:
    senders = [sender("203.0.113.5", 12, 0), sender("198.51.100.7", 0, 3), sender("192.0.2.1", 0, 9, "other.example")]
    findings = dmarc_findings(senders, ["example.test", "quiet.test"], since=NOW)
    assert [(f.subject, f.state) for f in findings] == [
        ("example.test", "ok"), ("example.test from 198.51.100.7", "warn"), ("quiet.test", "ok")]
    assert "12 of 15" in findings[0].found and "SPF" in findings[1].advice
    assert "no aggregate report" in findings[2].found
