"""One doctor's round: run each check's probes and turn what they saw into the diagnosis."""

from __future__ import annotations

__all__ = ["DoctorOptions", "examine"]

import asyncio
import secrets
from datetime import datetime, timedelta

import msgspec

from appliance.cli.backend import CommandFailed
from appliance.config import ApplianceConfig, parse_hostport
from appliance.doctor import probes
from appliance.doctor.checks import (
    PortTarget,
    certificate_finding,
    dmarc_findings,
    dns_findings,
    listening_host,
    message_finding,
    port_finding,
    port_targets,
)
from appliance.doctor.findings import CHECKS, Diagnosis, Finding
from appliance.store.database import utc


class DoctorOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What to check and how long to wait."""

    skip: frozenset[str] = frozenset()
    """Checks not run (names from ``CHECKS``)."""
    ports: tuple[int, ...] = ()
    """Ports checked beyond (or instead of the role of) the mode's own."""
    connect_within: float = 3.0
    """Seconds a connection or TLS handshake may take."""
    decision_within: float = 15.0
    """Seconds to wait for the test message's decision to appear in the audit."""
    report_days: int = 7
    """How far back the DMARC summary looks."""


def agent_domains(config: ApplianceConfig) -> list[str]:
    """The mail domains of the configured agents, each once."""
    return sorted({a.address.rpartition("@")[2].lower() for a in config.agents})


async def examine(config: ApplianceConfig, options: DoctorOptions | None = None) -> Diagnosis:
    """Run every check not skipped, in ``CHECKS`` order; never raises for what it finds wrong."""
    options = options or DoctorOptions()
    findings: list[Finding] = []
    listening: list[PortTarget] = []
    if "dns" not in options.skip:
        findings += await _dns(config)
    targets = port_targets(config, options.ports)
    if "ports" not in options.skip or "certificates" not in options.skip:
        seen = await asyncio.gather(*(probes.probe_port(t.host, t.port, within=options.connect_within)
                                      for t in targets))
        listening = [t for t, s in zip(targets, seen, strict=True) if s.listening]
        if "ports" not in options.skip:
            findings += [port_finding(s, t) for t, s in zip(targets, seen, strict=True)]
            findings += await _public(config, targets, options)
    if "certificates" not in options.skip:
        findings += await _certificates(config, listening, options)
    if "message" not in options.skip:
        findings.append(await _message(config, options))
    if "dmarc" not in options.skip:
        findings += await _dmarc(config, options)
    return Diagnosis(findings=tuple(findings), skipped=tuple(c for c in CHECKS if c in options.skip))


async def _dns(config: ApplianceConfig) -> list[Finding]:
    domains = agent_domains(config)
    if not domains:
        return [Finding(check="dns", subject="domains", state="fail", found="no agent configured",
                        expected="at least one agent", advice="add an [[agents]] entry to the configuration")]
    try:
        checks = await probes.verify_domains(config, domains)
    except Exception as exc:  # any failure to check is itself the finding
        return [Finding(check="dns", subject=", ".join(domains), state="fail", found=f"could not check: {exc}",
                        advice="run `appliance domains add DOMAIN` for each agent domain, and check dns.nameservers")]
    return [finding for check in checks for finding in dns_findings(check)]


async def _public(config: ApplianceConfig, targets: list[PortTarget], options: DoctorOptions) -> list[Finding]:
    address = config.domains.public_address
    if not address:
        return []
    public = [msgspec.structs.replace(t, host=address) for t in targets]
    seen = await asyncio.gather(*(probes.probe_port(t.host, t.port, within=options.connect_within)
                                  for t in public))
    return [port_finding(s, t, public=True) for t, s in zip(public, seen, strict=True)]


async def _certificates(config: ApplianceConfig, listening: list[PortTarget],
                        options: DoctorOptions) -> list[Finding]:
    tls = [t for t in listening if t.tls != "none"]
    seen = await asyncio.gather(*(probes.read_certificate(t, config.hostname, within=options.connect_within)
                                  for t in tls))
    now = utc()
    return [certificate_finding(s, now) for s in seen]


def _intake(config: ApplianceConfig) -> tuple[str, int]:
    if config.mode == "sandbox":
        host, port = parse_hostport(config.smtp.listen, field="smtp.listen")
        return listening_host(host), port
    return "127.0.0.1", 25


async def _message(config: ApplianceConfig, options: DoctorOptions) -> Finding:
    if not config.agents:
        return Finding(check="message", subject="test message", state="fail", found="no agent to send to",
                       advice="add an [[agents]] entry to the configuration")
    agent = config.agents[0].address.lower()
    sender = f"doctor@{config.hostname}".lower()
    message_id = f"<doctor-{secrets.token_hex(8)}@{config.hostname}>"
    since = utc() - timedelta(seconds=5)
    host, port = _intake(config)
    seen = await probes.send_test_message(host, port, sender=sender, agent=agent, message_id=message_id,
                                          within=options.decision_within)
    if seen.error is None:
        try:
            seen = await probes.await_decision(config, seen, sender=sender, since=since,
                                               within=options.decision_within)
        except CommandFailed as exc:
            seen = msgspec.structs.replace(seen, error=f"the audit could not be read: {exc}")
    return message_finding(seen)


async def _dmarc(config: ApplianceConfig, options: DoctorOptions) -> list[Finding]:
    since: datetime = utc() - timedelta(days=options.report_days)
    try:
        senders = await asyncio.to_thread(probes.sender_summary, config, since)
    except CommandFailed as exc:
        return [Finding(check="dmarc", subject="aggregate reports", state="fail", found=f"could not read: {exc}",
                        advice="start the appliance (`appliance run`) or check the admin token")]
    return dmarc_findings(senders, agent_domains(config), since=since)
