"""From what the probes saw to findings (pure): which ports to try, and what each observation means.

The probes (``appliance.doctor.probes``) only observe; every judgement (how close an expiry is
too close, which DMARC results are a problem, what the operator should do) is made here.
"""

from __future__ import annotations

__all__ = [
    "CERT_FAIL_DAYS",
    "CERT_WARN_DAYS",
    "CertificateSeen",
    "DomainCheckLike",
    "MessageSeen",
    "PortSeen",
    "PortTarget",
    "RecordCheckLike",
    "SenderLike",
    "certificate_finding",
    "dmarc_findings",
    "dns_findings",
    "listening_host",
    "message_finding",
    "port_finding",
    "port_targets",
]

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol

import msgspec

from appliance.config import ApplianceConfig, parse_hostport
from appliance.doctor.findings import Finding

CERT_FAIL_DAYS = 14
"""A certificate expiring sooner than this fails (renewal has evidently stopped working)."""
CERT_WARN_DAYS = 30
"""Sooner than this is a warning (ACME clients renew at 30 days left)."""

Tls = Literal["implicit", "starttls", "none"]

_STANDARD: dict[int, tuple[str, Tls]] = {
    25: ("SMTP (MX)", "starttls"),
    465: ("SMTP submission (implicit TLS)", "implicit"),
    587: ("SMTP submission (STARTTLS)", "starttls"),
    443: ("HTTPS (JMAP, MTA-STS policy)", "implicit"),
    8080: ("HTTP (Stalwart's web admin and ACME)", "none"),
}
"""The ports a production box serves (stalwart mode), what each is for, and how it speaks TLS."""


class PortTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One port the box should serve."""

    host: str
    port: int
    purpose: str
    tls: Tls


class RecordCheckLike(Protocol):
    """What the doctor reads of ``appliance.domains.verify.RecordCheck``."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def expected(self) -> str: ...
    @property
    def found(self) -> tuple[str, ...]: ...
    @property
    def advice(self) -> str: ...


class DomainCheckLike(Protocol):
    """What the doctor reads of ``appliance.domains.verify.DomainCheck``."""

    @property
    def domain(self) -> str: ...
    @property
    def records(self) -> Sequence[RecordCheckLike]: ...


class SenderLike(Protocol):
    """What the doctor reads of ``appliance.store.reports.SenderSummary``."""

    @property
    def header_from(self) -> str: ...
    @property
    def source_ip(self) -> str: ...
    @property
    def messages(self) -> int: ...
    @property
    def dmarc_pass(self) -> int: ...
    @property
    def dmarc_fail(self) -> int: ...


class PortSeen(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    listening: bool
    error: str = ""
    """Why the connection failed (refused, timed out...)."""


class CertificateSeen(msgspec.Struct, frozen=True, kw_only=True):
    """The certificate a TLS port presented (or why none could be read)."""

    host: str
    port: int
    hostname: str
    """The name clients ask for (the appliance's ``hostname``)."""
    not_after: datetime | None = None
    """Expiry, naive UTC."""
    names: tuple[str, ...] = ()
    """DNS names the certificate is for (subjectAltName, else the subject's CN)."""
    error: str | None = None


class MessageSeen(msgspec.Struct, frozen=True, kw_only=True):
    """The doctor's test message: what SMTP answered and which decision the audit holds for it."""

    agent: str
    message_id: str
    reply: str | None = None
    error: str | None = None
    """Why the message could not be sent (SMTP refused the connection...)."""
    action: str | None = None
    reason: str | None = None
    waited: float = 0.0
    """Seconds spent looking for the decision."""


def listening_host(host: str) -> str:
    """Where to connect to reach a server listening on ``host`` (all interfaces: the loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def port_targets(config: ApplianceConfig, extra: Iterable[int] = ()) -> list[PortTarget]:
    """The local ports to check: sandbox mode its own SMTP and HTTP listeners, stalwart mode the standard
    set (25, 465, 587, 443, 8080) and the appliance's HTTP API; ``extra`` ports are added (or replace one)."""
    targets: dict[int, PortTarget] = {}
    http_host, http_port = parse_hostport(config.http.listen, field="http.listen")
    if config.mode == "sandbox":
        smtp_host, smtp_port = parse_hostport(config.smtp.listen, field="smtp.listen")
        tls: Tls = "starttls" if config.smtp.tls_cert else "none"
        targets[smtp_port] = PortTarget(host=listening_host(smtp_host), port=smtp_port,
                                        purpose="SMTP (the sandbox's intake)", tls=tls)
    else:
        for port, (purpose, kind) in _STANDARD.items():
            targets[port] = PortTarget(host="127.0.0.1", port=port, purpose=purpose, tls=kind)
    targets.setdefault(http_port, PortTarget(host=listening_host(http_host), port=http_port,
                                             purpose="HTTP (the appliance's API)", tls="none"))
    for port in extra:
        purpose, kind = _STANDARD.get(port, ("asked for with --port", "none"))
        targets[port] = PortTarget(host="127.0.0.1", port=port, purpose=purpose, tls=kind)
    return list(targets.values())


def port_finding(seen: PortSeen, target: PortTarget, *, public: bool = False) -> Finding:
    """Listening (locally) or reachable (on the public address) is ok; anything else fails."""
    where = "reachable from outside" if public else "listening"
    subject = f"{seen.host}:{seen.port} {target.purpose}"
    if seen.listening:
        return Finding(check="ports", subject=subject, state="ok", found=where)
    if public:
        advice = (f"open TCP {seen.port} in the VPS provider's firewall and the host's (ufw/nftables), and check "
                  f"that domains.public_address ({seen.host}) is this machine's address")
    else:
        advice = (f"nothing listens on {seen.host}:{seen.port}: is the appliance running (`appliance run`)"
                  + ("" if target.purpose.startswith(("SMTP (the", "HTTP (the")) else ", and Stalwart with it")
                  + "? Check `journalctl -u appliance` for why it did not start")
    return Finding(check="ports", subject=subject, state="fail", found=f"not {where} ({seen.error or 'no answer'})",
                   expected=where, advice=advice)


def _matches(pattern: str, hostname: str) -> bool:
    """RFC 6125 6.4.3: a wildcard stands for exactly one leftmost label."""
    pattern, hostname = pattern.lower().rstrip("."), hostname.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == hostname


def certificate_finding(seen: CertificateSeen, now: datetime) -> Finding:
    """Fail when unreadable, expired, for another name or expiring within ``CERT_FAIL_DAYS``;
    warn within ``CERT_WARN_DAYS``."""
    subject = f"{seen.host}:{seen.port} certificate"
    renew = "renew it (Stalwart's ACME: check its logs; or replace smtp.tls_cert) and restart"
    if seen.error is not None or seen.not_after is None:
        return Finding(check="certificates", subject=subject, state="fail", found=seen.error or "no certificate",
                       expected="a TLS certificate", advice="configure TLS on this port (a certificate and key "
                       f"for {seen.hostname})")
    left = seen.not_after - now
    expiry = f"expires {seen.not_after:%Y-%m-%d %H:%M} UTC"
    if not any(_matches(name, seen.hostname) for name in seen.names):
        return Finding(check="certificates", subject=subject, state="fail",
                       found=f"for {', '.join(seen.names) or 'no name'}, {expiry}", expected=f"for {seen.hostname}",
                       advice=f"get a certificate for {seen.hostname} (the hostname clients connect to)")
    if left <= timedelta(0):
        return Finding(check="certificates", subject=subject, state="fail",
                       found=f"expired {seen.not_after:%Y-%m-%d %H:%M} UTC", expected="a valid certificate",
                       advice=renew)
    days = left.days
    if left < timedelta(days=CERT_FAIL_DAYS):
        return Finding(check="certificates", subject=subject, state="fail", found=f"{expiry} ({days} days left)",
                       expected=f"at least {CERT_FAIL_DAYS} days left", advice=renew)
    if left < timedelta(days=CERT_WARN_DAYS):
        return Finding(check="certificates", subject=subject, state="warn", found=f"{expiry} ({days} days left)",
                       expected=f"at least {CERT_WARN_DAYS} days left",
                       advice="renewal should have happened by now: " + renew)
    return Finding(check="certificates", subject=subject, state="ok", found=f"{expiry} ({days} days left)")


def dns_findings(check: DomainCheckLike) -> list[Finding]:
    """One finding per record: ok as expected, missing or wrong fails, a failed lookup warns."""
    findings = []
    for record in check.records:
        subject = f"{record.type} {record.name}"
        found = " | ".join(record.found) if record.found else "nothing"
        if record.state == "ok":
            findings.append(Finding(check="dns", subject=subject, state="ok", found=found))
        elif record.state == "unknown":
            findings.append(Finding(check="dns", subject=subject, state="warn", found=f"lookup failed: {found}",
                                    expected=record.expected, advice=record.advice or
                                    "DNS did not answer: check dns.nameservers and try again"))
        else:
            findings.append(Finding(check="dns", subject=subject, state="fail",
                                    found=f"{record.state}: {found}", expected=record.expected,
                                    advice=record.advice or f"publish {record.type} {record.name} "
                                                            f"\"{record.expected}\""))
    return findings


def message_finding(seen: MessageSeen) -> Finding:
    """Ok once the test message has a decision in the audit, whatever it decided."""
    subject = f"test message to {seen.agent}"
    if seen.error is not None:
        return Finding(check="message", subject=subject, state="fail", found=seen.error,
                       expected="the message sent and its decision read",
                       advice="the message did not go through: see the ports lines above and the appliance's log")
    if seen.action is None:
        return Finding(check="message", subject=subject, state="fail",
                       found=f"no decision in the audit after {seen.waited:.0f} s (SMTP said: {seen.reply})",
                       expected=f"a decision for {seen.message_id}",
                       advice="the message reached SMTP but not the gate: in stalwart mode check the MTA hook "
                              "(Stalwart's log, hook.secret_env), else the appliance's log")
    because = f" ({seen.reason})" if seen.reason else ""
    return Finding(check="message", subject=subject, state="ok",
                   found=f"decided {seen.action}{because}, SMTP said: {seen.reply}")


def dmarc_findings(senders: Sequence[SenderLike], domains: Iterable[str], *, since: datetime) -> list[Finding]:
    """Per domain of ours: ok when every reported message passed DMARC; each source that failed it warns."""
    findings = []
    for domain in sorted({d.lower() for d in domains}):
        ours = [s for s in senders if s.header_from == domain]
        if not ours:
            findings.append(Finding(check="dmarc", subject=domain, state="ok",
                                    found=f"no aggregate report since {since:%Y-%m-%d}"))
            continue
        passed = sum(s.dmarc_pass for s in ours)
        total = sum(s.messages for s in ours)
        findings.append(Finding(check="dmarc", subject=domain, state="ok",
                                found=f"{passed} of {total} reported message(s) passed DMARC since {since:%Y-%m-%d}"))
        for sender in ours:
            if sender.dmarc_fail:
                findings.append(Finding(
                    check="dmarc", subject=f"{domain} from {sender.source_ip}", state="warn",
                    found=f"{sender.dmarc_fail} of {sender.messages} message(s) failed DMARC",
                    expected="every message as this domain passes DMARC",
                    advice=f"if {sender.source_ip} sends for you, add it to the SPF record or have it sign with "
                           f"DKIM for {domain}; if not, someone sends as {domain}: once your own mail passes, "
                           "publish p=quarantine or p=reject"))
    return findings
