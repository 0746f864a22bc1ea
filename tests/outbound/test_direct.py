"""The direct transport: MX over a real DNS server on loopback, real SMTP peers on 127.0.0.2 and 127.0.0.3."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trustme

from appliance.mailauth import DnsResolver
from appliance.outbound.transports import DirectTransport
from tests.dnsserver import DnsTestServer
from tests.outbound.conftest import HOST, delivery
from tests.outbound.peer import Peer, server_context

MX1, MX2 = "127.0.0.2", "127.0.0.3"


def common_port() -> int:
    """A port free on both MX addresses (the direct transport uses one port for every MX)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((MX1, 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind((MX2, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no common free port")


@pytest.fixture
def port() -> int:
    return common_port()


@pytest.fixture
def zone(dns_server: DnsTestServer) -> Iterator[DnsTestServer]:
    dns_server.add(("example.org", "MX", "10 mx1.example.org"), ("example.org", "MX", "20 mx2.example.org"),
                   ("mx1.example.org", "A", MX1), ("mx2.example.org", "A", MX2))
    yield dns_server


def direct(dns: DnsTestServer, port: int, **options: object) -> DirectTransport:
    return DirectTransport(DnsResolver([dns.address], timeout=0.5), hostname=HOST, port=port,  # type: ignore[arg-type]
                           connect_timeout=1.0, command_timeout=2.0, **options)


async def test_mail_goes_to_the_most_preferred_mx(zone: DnsTestServer, port: int) -> None:
    with Peer(MX1, port) as primary, Peer(MX2, port) as backup:
        transport = direct(zone, port)
        outcome = await transport.deliver(delivery(1, ["bob@example.org"]))
        await transport.aclose()
        assert [g.rcpt_tos for g in primary.messages()] == [["bob@example.org"]] and backup.messages() == []
    assert outcome.status == "sent" and outcome.peer == f"mx1.example.org[{MX1}]:{port}"


async def test_an_unreachable_or_unwilling_primary_gives_way_to_the_next_mx(zone: DnsTestServer, port: int) -> None:
    with Peer(MX2, port) as backup:
        transport = direct(zone, port)
        down = await transport.deliver(delivery(1))
        with Peer(MX1, port) as primary:
            primary.script.data_reply = "250 never"  # would take it, but greets...
            primary.script.mail_reply = "421 4.3.2 shutting down"
            busy = await transport.deliver(delivery(2))
        await transport.aclose()
        assert [g.message_id for g in backup.messages()] == [f"<m1@{HOST}>", f"<m2@{HOST}>"]
    assert down.status == busy.status == "sent" and down.peer == busy.peer == f"mx2.example.org[{MX2}]:{port}"


async def test_a_5xx_from_the_primary_is_the_domains_answer(zone: DnsTestServer, port: int) -> None:
    with Peer(MX1, port) as primary, Peer(MX2, port) as backup:
        primary.script.rcpt = {"bob@example.org": "550 5.1.1 no such user"}
        transport = direct(zone, port)
        outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        assert backup.connections == 0
    assert outcome.status == "failed" and outcome.code == 550


async def test_every_mx_failing_temporarily_is_a_retry_naming_each(zone: DnsTestServer, port: int) -> None:
    transport = direct(zone, port)
    outcome = await transport.deliver(delivery(1))
    assert outcome.status == "retry"
    assert "mx1.example.org" in outcome.detail and "mx2.example.org" in outcome.detail


async def test_no_mx_means_the_domain_itself_implicit_mx(dns_server: DnsTestServer, port: int) -> None:
    dns_server.add(("example.net", "A", MX1))
    with Peer(MX1, port) as peer:
        transport = direct(dns_server, port)
        outcome = await transport.deliver(delivery(1, ["dave@example.net"]))
        await transport.aclose()
        assert len(peer.messages()) == 1
    assert outcome.status == "sent" and outcome.peer == f"example.net[{MX1}]:{port}"


async def test_null_mx_and_no_mail_server_at_all_are_final(dns_server: DnsTestServer, port: int) -> None:
    dns_server.add(("nomail.example", "MX", "0 ."), ("nomail.example", "A", MX1))
    transport = direct(dns_server, port)
    null = await transport.deliver(delivery(1, ["x@nomail.example"]))
    nothing = await transport.deliver(delivery(2, ["x@nowhere.example"]))
    assert null.status == "failed" and null.detail.startswith("5.1.10") and "RFC 7505" in null.detail
    assert nothing.status == "failed" and nothing.detail.startswith("5.1.2")


async def test_dns_that_does_not_answer_is_a_retry(zone: DnsTestServer, port: int) -> None:
    zone.fail("example.org", "MX", how="servfail")
    transport = direct(zone, port)
    outcome = await transport.deliver(delivery(1))
    assert outcome.status == "retry" and "MX of example.org unknown" in outcome.detail


async def test_starttls_is_used_when_offered_even_with_a_certificate_nobody_trusts(
        zone: DnsTestServer, port: int) -> None:
    stranger = trustme.CA()
    with Peer(MX1, port, tls=server_context(stranger, "whatever.example")) as primary:
        transport = direct(zone, port)
        outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        [got] = primary.messages()
    assert outcome.status == "sent" and got.tls, "opportunistic TLS (RFC 7435): encrypted, not authenticated"
