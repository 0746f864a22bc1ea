"""The smarthost transport against a real aiosmtpd peer on 127.0.0.1: 250, 4xx, 5xx, hang, TLS, AUTH."""

from __future__ import annotations

import ssl
import time

import pytest
import trustme

from appliance.config import OutboundConfig
from appliance.outbound.transports import SmarthostTransport
from tests.outbound.conftest import HOST, delivery
from tests.outbound.peer import BlackHole, Peer, server_context


def smarthost(port: int, *, context: ssl.SSLContext | None = None, host: str = "127.0.0.1",
              environ: dict[str, str] | None = None, command_timeout: float = 5.0,
              **config: object) -> SmarthostTransport:
    settings = OutboundConfig(transport="smarthost", smarthost=f"{host}:{port}", **{  # type: ignore[arg-type]
        "require_tls": False, "connect_timeout": 2.0, **config})
    return SmarthostTransport(settings, hostname=HOST, environ=environ or {}, tls_context=context,
                              command_timeout=command_timeout)


async def test_250_is_sent_with_the_peer_and_its_reply() -> None:
    with Peer() as peer:
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery(1, ["bob@example.org", "carol@example.org"]))
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent" and outcome.code == 250
    assert outcome.detail == "250 2.0.0 Ok: queued"
    assert outcome.peer == f"127.0.0.1:{peer.port}" and outcome.refused == []
    assert got.mail_from == "agent@example.test" and got.rcpt_tos == ["bob@example.org", "carol@example.org"]
    assert got.message_id == f"<m1@{HOST}>" and got.data.endswith(b"body 1\r\n")
    assert any(o.startswith("SIZE=") for o in got.mail_options)


@pytest.mark.parametrize(("reply", "status"), [("451 4.3.0 try again later", "retry"),
                                                ("554 5.7.1 spam", "failed")])
async def test_a_refused_message_is_retried_on_4xx_and_failed_on_5xx(reply: str, status: str) -> None:
    with Peer() as peer:
        peer.script.data_reply = reply
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery())
        await transport.aclose()
    assert outcome.status == status and outcome.code == int(reply[:3])
    assert reply in outcome.detail and peer.messages() == []


async def test_recipients_refused_one_by_one_are_reported_each_with_its_reply() -> None:
    with Peer() as peer:
        peer.script.rcpt = {"gone@example.org": "550 5.1.1 no such user", "full@example.org": "452 4.2.2 mailbox full"}
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery(1, ["bob@example.org", "gone@example.org", "full@example.org"]))
        everyone = await transport.deliver(delivery(2, ["gone@example.org"]))
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent" and got.rcpt_tos == ["bob@example.org"]
    assert [(r.address, r.code) for r in outcome.refused] == [("gone@example.org", 550), ("full@example.org", 452)]
    assert "no such user" in outcome.refused[0].detail
    assert everyone.status == "failed" and everyone.code == 550 and "refused every recipient" in everyone.detail


async def test_a_peer_that_hangs_on_the_final_dot_is_given_up_after_the_command_timeout() -> None:
    with Peer() as peer:
        peer.script.hang = 30.0
        transport = smarthost(peer.port, command_timeout=0.5)
        started = time.monotonic()
        outcome = await transport.deliver(delivery())
        took = time.monotonic() - started
        await transport.aclose()
    assert outcome.status == "retry" and "did not answer the message" in outcome.detail
    assert 0.4 < took < 3.0


async def test_a_peer_that_never_greets_is_a_retry_after_the_connect_timeout() -> None:
    with BlackHole() as hole:
        transport = smarthost(hole.port, connect_timeout=0.5)
        started = time.monotonic()
        outcome = await transport.deliver(delivery())
        await transport.aclose()
    assert outcome.status == "retry" and "cannot connect" in outcome.detail
    assert time.monotonic() - started < 3.0


async def test_nobody_listening_is_a_retry() -> None:
    with BlackHole() as hole:
        port = hole.port
    transport = smarthost(port)
    outcome = await transport.deliver(delivery())
    assert outcome.status == "retry" and "cannot connect" in outcome.detail


async def test_require_tls_refuses_a_relay_without_starttls(client_context: ssl.SSLContext) -> None:
    with Peer() as peer:
        transport = smarthost(peer.port, context=client_context, require_tls=True)
        outcome = await transport.deliver(delivery())
        await transport.aclose()
    assert outcome.status == "retry"
    assert "does not offer STARTTLS: refusing to send in clear" in outcome.detail
    assert peer.messages() == []


async def test_require_tls_refuses_a_certificate_for_another_name(ca: trustme.CA,
                                                                  client_context: ssl.SSLContext) -> None:
    with Peer(tls=server_context(ca, "other.example.test")) as peer:
        transport = smarthost(peer.port, context=client_context, host="localhost", require_tls=True)
        outcome = await transport.deliver(delivery())
        await transport.aclose()
    assert outcome.status == "retry" and "STARTTLS" in outcome.detail and "certificate" in outcome.detail.lower()
    assert peer.messages() == []


async def test_starttls_and_auth_with_credentials_from_the_environment(ca: trustme.CA,
                                                                       client_context: ssl.SSLContext) -> None:
    env = {"RELAY_USER": "agent-relay", "RELAY_PASSWORD": "s3cret"}
    with Peer(tls=server_context(ca, "localhost"), users={"agent-relay": "s3cret"}) as peer:
        transport = smarthost(peer.port, context=client_context, host="localhost", environ=env, require_tls=True,
                              smarthost_username_env="RELAY_USER", smarthost_password_env="RELAY_PASSWORD")
        outcome = await transport.deliver(delivery())
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent" and got.tls and peer.logins == ["agent-relay"]


async def test_wrong_credentials_and_missing_ones_are_retried_with_a_clear_detail(
        ca: trustme.CA, client_context: ssl.SSLContext) -> None:
    with Peer(tls=server_context(ca, "localhost"), users={"agent-relay": "s3cret"}) as peer:
        wrong = smarthost(peer.port, context=client_context, host="localhost", require_tls=True,
                          environ={"RELAY_USER": "agent-relay", "RELAY_PASSWORD": "nope"},
                          smarthost_username_env="RELAY_USER", smarthost_password_env="RELAY_PASSWORD")
        refused = await wrong.deliver(delivery())
        await wrong.aclose()
        unset = smarthost(peer.port, context=client_context, host="localhost", require_tls=True,
                          smarthost_username_env="RELAY_USER", smarthost_password_env="RELAY_PASSWORD")
        missing = await unset.deliver(delivery())
    assert refused.status == "retry" and "refused our AUTH" in refused.detail and refused.code == 535
    assert missing.status == "retry" and "RELAY_USER is not set" in missing.detail
    assert peer.messages() == []


async def test_credentials_are_never_sent_in_clear() -> None:
    with Peer() as peer:
        transport = smarthost(peer.port, environ={"U": "u", "P": "p"}, smarthost_username_env="U",
                              smarthost_password_env="P")
        outcome = await transport.deliver(delivery())
        await transport.aclose()
    assert outcome.status == "retry" and "credentials in clear" in outcome.detail


async def test_without_require_tls_starttls_is_used_when_offered(ca: trustme.CA) -> None:
    with Peer(tls=server_context(ca, "localhost")) as peer:
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery())
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent" and got.tls


async def test_a_non_ascii_address_needs_smtputf8() -> None:
    with Peer(smtputf8=False) as peer:
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery(1, ["jörg@example.org"]))
        await transport.aclose()
    assert outcome.status == "failed" and "SMTPUTF8" in outcome.detail
    with Peer() as peer:
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery(1, ["jörg@example.org"]))
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent" and got.rcpt_tos == ["jörg@example.org"] and "SMTPUTF8" in got.mail_options


def test_a_smarthost_transport_needs_a_smarthost() -> None:
    with pytest.raises(ValueError, match="smarthost"):
        SmarthostTransport(OutboundConfig(transport="smarthost"), hostname=HOST)


async def test_with_the_dsn_extension_a_bounce_will_name_our_email_id_and_each_recipient() -> None:
    with Peer(dsn=True) as peer:
        transport = smarthost(peer.port)
        outcome = await transport.deliver(delivery(1, ["bob@example.org", "carol+x@example.org"]))
        await transport.aclose()
        [got] = peer.messages()
    assert outcome.status == "sent"
    assert got.dsn_options == ["RET=HDRS", "ENVID=s0001", "ORCPT=rfc822;bob@example.org",
                               "ORCPT=rfc822;carol+2Bx@example.org"]
