"""The probes against real loopback sockets: ports open and closed, certificates over TLS and STARTTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import SmtpConfig
from appliance.doctor.checks import PortTarget, certificate_finding
from appliance.doctor.probes import probe_port, read_certificate
from appliance.inbound.smtp import start_smtp_server
from appliance.runtime import Runtime
from appliance.store.database import utc
from tests.conftest import HOSTNAME


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_listening_port_is_seen_and_a_closed_one_is_not() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await probe_port("127.0.0.1", port)).listening
        shut = await probe_port("127.0.0.1", closed_port())
        assert not shut.listening and shut.error
    finally:
        server.close()
        await server.wait_closed()


def expired_certificate(tmp_path: Path, hostname: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``hostname`` that expired yesterday (trustme cannot backdate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=90))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "expired.pem", tmp_path / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def tls_server(context: ssl.SSLContext) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)


@pytest.fixture
async def valid_tls() -> AsyncIterator[int]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOSTNAME).configure_cert(context)
    server = await tls_server(context)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def test_a_valid_certificate_on_an_implicit_tls_port_is_ok(valid_tls: int) -> None:
    target = PortTarget(host="127.0.0.1", port=valid_tls, purpose="HTTPS", tls="implicit")
    seen = await read_certificate(target, HOSTNAME)
    assert seen.error is None and HOSTNAME in seen.names
    assert certificate_finding(seen, utc()).state == "ok"


async def test_a_certificate_for_another_host_fails(valid_tls: int) -> None:
    target = PortTarget(host="127.0.0.1", port=valid_tls, purpose="HTTPS", tls="implicit")
    finding = certificate_finding(await read_certificate(target, "mail.other.example"), utc())
    assert finding.state == "fail" and finding.expected == "for mail.other.example"


async def test_an_expired_certificate_fails(tmp_path: Path) -> None:
    cert, key = expired_certificate(tmp_path, HOSTNAME)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await tls_server(context)
    try:
        target = PortTarget(host="127.0.0.1", port=server.sockets[0].getsockname()[1], purpose="SMTPS",
                            tls="implicit")
        finding = certificate_finding(await read_certificate(target, HOSTNAME), utc())
        assert finding.state == "fail" and finding.found.startswith("expired")
    finally:
        server.close()
        await server.wait_closed()


async def test_starttls_on_the_smtp_intake_presents_its_certificate(runtime: Runtime, tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert(HOSTNAME)
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    server = await start_smtp_server(SmtpConfig(listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)),
                                     runtime.reception, hostname=HOSTNAME)
    try:
        target = PortTarget(host="127.0.0.1", port=server.port, purpose="SMTP", tls="starttls")
        seen = await read_certificate(target, HOSTNAME)
        assert seen.error is None and seen.names == (HOSTNAME,)
        assert certificate_finding(seen, utc()).state == "ok"
    finally:
        await server.stop()


async def test_an_smtp_server_without_starttls_is_named(runtime: Runtime) -> None:
    server = await start_smtp_server(SmtpConfig(listen="127.0.0.1:0"), runtime.reception, hostname=HOSTNAME)
    try:
        target = PortTarget(host="127.0.0.1", port=server.port, purpose="SMTP", tls="starttls")
        finding = certificate_finding(await read_certificate(target, HOSTNAME), utc())
        assert finding.state == "fail" and finding.found == "the server does not offer STARTTLS"
    finally:
        await server.stop()
