"""The doctor's observations (adapters): connect to ports, read certificates, send the test message, look
things up in DNS, the audit and the report store. Nothing here judges: ``appliance.doctor.checks`` does."""

from __future__ import annotations

__all__ = [
    "await_decision",
    "doctor_message",
    "find_decision",
    "probe_port",
    "read_certificate",
    "send_test_message",
    "sender_summary",
    "verify_domains",
]

import asyncio
import contextlib
import ssl
import time
from datetime import datetime
from email.utils import formatdate

import aiosmtplib
from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.audit.query import QueryResult, decisions_page
from appliance.cli import backend
from appliance.config import ApplianceConfig
from appliance.doctor.checks import CertificateSeen, DomainCheckLike, MessageSeen, PortSeen, PortTarget
from appliance.store.audit import AuditFilter
from appliance.store.reports import SenderSummary, summary


async def probe_port(host: str, port: int, *, within: float = 3.0) -> PortSeen:
    """Whether a TCP connection to ``host:port`` is accepted within ``within`` seconds."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    except TimeoutError:
        return PortSeen(host=host, port=port, listening=False, error=f"no answer within {within:g} s")
    except OSError as exc:
        return PortSeen(host=host, port=port, listening=False, error=exc.strerror or str(exc))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return PortSeen(host=host, port=port, listening=True)


def _unverified() -> ssl.SSLContext:
    # The doctor reads whatever certificate is presented so it can say what is wrong with it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _seen(target: PortTarget, hostname: str, der: bytes | None) -> CertificateSeen:
    if not der:
        return CertificateSeen(host=target.host, port=target.port, hostname=hostname, error="no certificate presented")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return CertificateSeen(host=target.host, port=target.port, hostname=hostname,
                               error=f"unreadable certificate: {exc}")
    try:
        names = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return CertificateSeen(host=target.host, port=target.port, hostname=hostname,
                           not_after=cert.not_valid_after_utc.replace(tzinfo=None), names=names)


async def read_certificate(target: PortTarget, hostname: str, *, within: float = 5.0) -> CertificateSeen:
    """The certificate ``target`` presents: a TLS handshake (implicit TLS) or SMTP STARTTLS."""
    try:
        if target.tls == "starttls":
            client = aiosmtplib.SMTP(hostname=target.host, port=target.port, timeout=within, start_tls=False,
                                     use_tls=False, local_hostname="doctor.invalid")
            await client.connect()
            try:
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    return CertificateSeen(host=target.host, port=target.port, hostname=hostname,
                                           error="the server does not offer STARTTLS")
                await client.starttls(tls_context=_unverified(), server_hostname=hostname)
                ssl_object = client.get_transport_info("ssl_object")
                return _seen(target, hostname, ssl_object.getpeercert(binary_form=True))
            finally:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.quit()
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            target.host, target.port, ssl=_unverified(), server_hostname=hostname), within)
        try:
            return _seen(target, hostname, writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    except TimeoutError:
        return CertificateSeen(host=target.host, port=target.port, hostname=hostname,
                               error=f"no TLS handshake within {within:g} s")
    except (OSError, ssl.SSLError, aiosmtplib.SMTPException) as exc:
        return CertificateSeen(host=target.host, port=target.port, hostname=hostname,
                               error=f"TLS handshake failed: {exc}")


def doctor_message(*, sender: str, agent: str, message_id: str) -> bytes:
    """The doctor's message: small, plain, recognisable in the audit by its Message-ID."""
    return (f"From: Appliance doctor <{sender}>\r\nTo: <{agent}>\r\nSubject: appliance doctor test\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: {message_id}\r\n\r\n"
            "A test message from `appliance doctor`: its decision shows the intake and the gate work.\r\n").encode()


async def send_test_message(host: str, port: int, *, sender: str, agent: str, message_id: str,
                            within: float = 15.0) -> MessageSeen:
    """Send the test message over SMTP; the reply whatever it is (a refusal is a decision too)."""
    raw = doctor_message(sender=sender, agent=agent, message_id=message_id)
    try:
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=within, start_tls=False,
                                   local_hostname="doctor.invalid") as client:
            try:
                _, reply = await client.sendmail(sender, [agent], raw)
                return MessageSeen(agent=agent, message_id=message_id, reply=f"250 {reply}")
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refusal = exc.recipients[0]
                return MessageSeen(agent=agent, message_id=message_id, reply=f"{refusal.code} {refusal.message}")
            except aiosmtplib.SMTPResponseException as exc:
                return MessageSeen(agent=agent, message_id=message_id, reply=f"{exc.code} {exc.message}")
    except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
        return MessageSeen(agent=agent, message_id=message_id, error=f"SMTP to {host}:{port} failed: {exc}")


def _decision_of(page: QueryResult, message_id: str) -> tuple[str, str | None] | None:
    columns = page.columns
    for row in page.rows:
        record = dict(zip(columns, row, strict=True))
        if record.get("message_id") == message_id:
            return str(record["action"]), record.get("reason")
    return None


def find_decision(config: ApplianceConfig, *, sender: str, agent: str, message_id: str,
                  since: datetime) -> tuple[str, str | None] | None:
    """The (action, reason) the audit holds for ``message_id``: from the file, or the running appliance's API."""
    flt = AuditFilter(since=since, sender=sender, agent=agent, limit=1000)
    page = backend.run(
        config, local=lambda con: decisions_page(con, flt),
        remote=lambda api: api.get("/api/v1/audit/", into=QueryResult, since=since.isoformat(), sender=sender,
                                   agent=agent, limit=1000))
    return _decision_of(page, message_id)


async def await_decision(config: ApplianceConfig, seen: MessageSeen, *, sender: str, since: datetime,
                         within: float) -> MessageSeen:
    """``seen`` with the decision found in the audit, polled for ``within`` seconds at most."""
    started = time.monotonic()
    while True:
        found = await asyncio.to_thread(find_decision, config, sender=sender, agent=seen.agent,
                                        message_id=seen.message_id, since=since)
        waited = time.monotonic() - started
        if found is not None:
            action, reason = found
            return MessageSeen(agent=seen.agent, message_id=seen.message_id, reply=seen.reply, action=action,
                               reason=reason, waited=waited)
        if waited >= within:
            return MessageSeen(agent=seen.agent, message_id=seen.message_id, reply=seen.reply, waited=waited)
        await asyncio.sleep(0.2)


def sender_summary(config: ApplianceConfig, since: datetime) -> list[SenderSummary]:
    """The DMARC report summary: from the file, or the running appliance's API."""
    return backend.run(config, local=lambda con: summary(con, since),
                       remote=lambda api: api.get("/api/v1/reports/dmarc", into=list[SenderSummary],
                                                  since=since.isoformat()))


async def verify_domains(config: ApplianceConfig, domains: list[str]) -> list[DomainCheckLike]:
    """Each domain's records as DNS answers them, against its manifest (``appliance.domains``)."""
    # imported here: the domains package is only needed by this check
    from appliance.domains.service import dkim_keys, domain_manifest, verification_resolver
    from appliance.domains.verify import verify_domain
    from appliance.store.database import utc

    keys = dkim_keys(config)
    resolver = verification_resolver(config)
    return [await verify_domain(await domain_manifest(config, keys, d), resolver, now=utc()) for d in domains]
