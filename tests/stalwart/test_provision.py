"""Provisioning against the stand-in (a real process speaking Stalwart's management JMAP, which checks
every request's shape against stalwart.md): bootstrap, setup, idempotence, drift repaired."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import smtplib
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.stalwart.dkim import StalwartDkimKeys, public_keys_of
from appliance.stalwart.management import ManagementClient, basic_authorization
from appliance.stalwart.provision import Provisioner
from appliance.stalwart.setup import DesiredAccount, DesiredCertificate, DesiredHook, DesiredSetup
from appliance.store.database import Database
from appliance.store.stalwart import stalwart_keys
from tests.images import free_port
from tests.stalwart.standin_process import StandinProcess

ADMIN = ("admin", "admin-secret")
DESIRED = DesiredSetup(
    hostname="mx.example.test", default_domain="example.test", request_tls=False,
    domains=["example.org", "example.test"],
    accounts=[DesiredAccount(agent="agent@example.test", domain="example.test", password="agent-pw"),
              DesiredAccount(agent="other@example.org", domain="example.org", password=None)],
    hook=DesiredHook(url="http://127.0.0.1:9/hooks/mta", secret="hook-secret"))


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    process = StandinProcess(tmp_path / "data", tmp_path / "etc", free_port(), free_port(), admin=":".join(ADMIN))
    with process:
        yield process


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "appliance.duckdb")
    try:
        yield database
    finally:
        database.close()


class Setup:
    def __init__(self, standin: StandinProcess, db: Database, http: httpx.AsyncClient) -> None:
        self.standin, self.db, self.http = standin, db, http
        self.restarts: list[str] = []
        self.management = ManagementClient(http, standin.base_url, basic_authorization(*ADMIN))

    async def restart(self, reason: str) -> None:
        self.restarts.append(reason)
        self.standin.stop()
        self.standin.start()
        self.standin.wait_ready(30)

    def provisioner(self, desired: DesiredSetup = DESIRED) -> Provisioner:
        return Provisioner(self.management, self.http, self.standin.base_url, self.db, desired,
                           restart=self.restart)

    async def control(self, path: str) -> Any:
        return (await self.http.get(self.standin.base_url + path)).json()


@pytest.fixture
async def setup(standin: StandinProcess, db: Database) -> AsyncIterator[Setup]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield Setup(standin, db, http)


async def test_a_new_stalwart_is_bootstrapped_restarted_and_configured(setup: Setup) -> None:
    report = await setup.provisioner().run()
    assert report.bootstrapped and setup.restarts == ["bootstrapped"]
    assert len(report.steps) == 7  # 2 domains, 2 accounts, 2 API keys, the hook
    methods = [c["method"] for c in await setup.control("/_standin/requests")]
    assert methods[-1] == "x:Action/set"  # a reload after the changes
    assert await setup.control("/_standin/violations") == []
    hooks = await setup.management.get("MtaHook")
    assert [(h["url"], h["stages"], h["tempFailOnError"]) for h in hooks] == [
        ("http://127.0.0.1:9/hooks/mta", {"rcpt": True, "data": True}, True)]
    assert hooks[0]["httpAuth"]["@type"] == "Bearer"
    keys = await setup.db.read(stalwart_keys)
    assert [k.agent for k in keys] == ["agent@example.test", "other@example.org"]
    assert all(k.secret.startswith("API_") for k in keys)


async def test_running_it_twice_changes_nothing(setup: Setup) -> None:
    await setup.provisioner().run()
    before = len(await setup.control("/_standin/requests"))
    report = await setup.provisioner().run()
    assert report.steps == [] and not report.bootstrapped
    after = await setup.control("/_standin/requests")
    assert all(not c["method"].endswith("/set") for c in after[before:])  # reads only


async def test_a_deleted_hook_is_repaired_and_logged_as_drift(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    await setup.provisioner().run()
    hook_id = (await setup.management.get("MtaHook"))[0]["id"]
    await setup.management.set("MtaHook", destroy=[hook_id])
    with caplog.at_level(logging.WARNING, "appliance.stalwart"):
        report = await setup.provisioner().run()
    assert len(report.steps) == 1 and "MTA hook" in report.steps[0]
    assert any("drift" in r.getMessage() for r in caplog.records)
    assert len(await setup.management.get("MtaHook")) == 1


async def test_a_deleted_api_key_is_replaced_and_the_new_one_recorded(setup: Setup) -> None:
    await setup.provisioner().run()
    old = {k.agent: k.secret for k in await setup.db.read(stalwart_keys)}
    keys = await setup.management.get("ApiKey")
    await setup.management.set("ApiKey", destroy=[str(keys[0]["id"])])
    report = await setup.provisioner().run()
    assert len(report.steps) == 1 and "API key" in report.steps[0]
    new = {k.agent: k.secret for k in await setup.db.read(stalwart_keys)}
    assert sum(old[a] != new[a] for a in old) == 1


async def test_the_agents_api_key_reaches_its_mail(setup: Setup) -> None:
    await setup.provisioner().run()
    key = (await setup.db.read(stalwart_keys))[0]
    session = await setup.http.get(setup.standin.base_url + "/.well-known/jmap", follow_redirects=True,
                                   headers={"Authorization": f"Bearer {key.secret}"})
    assert session.status_code == 200
    assert session.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"]


async def test_the_domains_dkim_keys_are_stalwarts_own_read_back(setup: Setup) -> None:
    await setup.provisioner().run()
    keys = StalwartDkimKeys(setup.standin.base_url, basic_authorization(*ADMIN))
    found = []
    for _ in range(100):  # Stalwart makes them asynchronously after the domain
        found = await keys.public_keys("example.test")
        if len(found) == 2:
            break
        await asyncio.sleep(0.05)
    assert [k.kind for k in found] == ["rsa", "ed25519"]
    rsa_key = serialization.load_der_public_key(base64.b64decode(found[0].p))
    assert isinstance(rsa_key, rsa.RSAPublicKey) and rsa_key.key_size == 2048
    assert len(base64.b64decode(found[1].p)) == 32  # ed25519: the raw key (RFC 8463)
    assert await keys.public_keys("unknown.example") == []


def test_unknown_dkim_algorithms_are_left_out_and_rsa_comes_first() -> None:
    objects = [{"selector": "e", "@type": "Dkim1Ed25519Sha256", "publicKey": base64.b64encode(b"k" * 32).decode()},
               {"selector": "x", "@type": "Dkim2Future", "publicKey": "AAAA"},
               {"selector": "r", "@type": "Dkim1RsaSha256", "publicKey": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END"
                "PUBLIC KEY-----\n"}]
    assert [(k.selector, k.kind, k.p) for k in public_keys_of(objects)] == [
        ("r", "rsa", "AAAA"), ("e", "ed25519", base64.b64encode(b"k" * 32).decode())]


def presented_certificate(port: int) -> bytes:
    """The DER certificate an SMTP server presents after STARTTLS (checked by the test, not by ssl)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=context)
        assert isinstance(client.sock, ssl.SSLSocket)
        der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def issue(folder: Path, ca: trustme.CA) -> tuple[DesiredSetup, bytes]:
    """A certificate for the MX host written where the configuration says; the desired setup and its DER."""
    issued = ca.issue_cert("mx.example.test")
    cert, key = folder / "fullchain.pem", folder / "privkey.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    pem = cert.read_bytes()
    desired = msgspec.structs.replace(DESIRED, certificate=DesiredCertificate(
        certificate_path=str(cert), private_key_path=str(key), fingerprint=hashlib.sha256(pem).hexdigest()))
    return desired, ssl.PEM_cert_to_DER_cert(pem.decode())


async def test_smtp_presents_the_shared_certificate_and_a_renewal_after_a_reload(setup: Setup,
                                                                                 tmp_path: Path) -> None:
    ca = trustme.CA()
    desired, der = issue(tmp_path, ca)
    report = await setup.provisioner(desired).run()
    assert any(line.startswith("certificate ") and "added" in line for line in report.steps)
    assert await setup.control("/_standin/violations") == []
    held = await setup.management.get("Certificate")
    assert [(c["certificate"], c["privateKey"]) for c in held] == [
        ({"@type": "File", "filePath": str(tmp_path / "fullchain.pem")},
         {"@type": "File", "filePath": str(tmp_path / "privkey.pem")})]
    assert presented_certificate(setup.standin.smtp_port) == der

    assert (await setup.provisioner(desired).run()).steps == []  # the same file: nothing to do

    renewed, renewed_der = issue(tmp_path, ca)  # renewal rewrites the same files
    assert renewed_der != der
    assert presented_certificate(setup.standin.smtp_port) == der  # Stalwart reads them on a reload only
    report = await setup.provisioner(renewed).run()
    assert report.steps == [f"TLS certificates reloaded (sha256 {renewed.certificate.fingerprint[:16]}...) "  # type: ignore[union-attr]
                            "(the certificate file changed (renewed))"]
    assert len(await setup.management.get("Certificate")) == 1
    assert presented_certificate(setup.standin.smtp_port) == renewed_der
