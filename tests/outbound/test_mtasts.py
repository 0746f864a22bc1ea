"""MTA-STS (RFC 8461): policies read, fetched over real HTTPS (trustme), cached, enforced by the direct transport."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator

import pytest
import trustme

from appliance.mailauth import DnsResolver
from appliance.outbound.mtasts import MtaSts, MtaStsError, mx_matches, parse_policy, parse_record
from appliance.outbound.transports import DirectTransport
from tests.dnsserver import DnsTestServer
from tests.outbound.conftest import HOST, delivery
from tests.outbound.peer import Peer, server_context
from tests.outbound.policyserver import Answer, PolicyServer
from tests.outbound.test_direct import MX1, MX2, common_port

POLICY_HOST = "mta-sts.example.org"


# -- reading --------------------------------------------------------------------------------------------------


def test_the_txt_record_gives_the_policy_id_only_when_exactly_one_is_valid() -> None:
    assert parse_record(["v=STSv1; id=20261123T1;"]) == "20261123T1"
    assert parse_record(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert parse_record(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # RFC 8461 3.1: not exactly one
    assert parse_record([]) is None and parse_record(["v=STSv1"]) is None
    assert parse_record(["v=STSv1; id=not-alnum"]) is None and parse_record(["v=STSv1; id=" + "a" * 33]) is None


def test_a_policy_is_read_and_a_bad_one_refused_with_the_reason() -> None:
    policy = parse_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.Example.NET.\r\n"
                          "max_age: 604800\r\nextension: ignored\r\n")
    assert policy.mode == "enforce" and policy.mx == ["mail.example.org", "*.example.net"]
    assert policy.max_age == 604800
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n").max_age == 31_557_600
    for bad, why in [("mode: enforce\nmx: a\nmax_age: 1\n", "version"),
                     ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", "mode"),
                     ("version: STSv1\nmode: enforce\nmax_age: 1\n", "names no mx"),
                     ("version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n", "max_age"),
                     ("version: STSv1\nmode enforce\n", "key: value")]:
        with pytest.raises(MtaStsError, match=why):
            parse_policy(bad)


def test_mx_patterns_match_a_name_or_one_leftmost_label() -> None:
    assert mx_matches("mail.example.org", "MAIL.example.org.")
    assert mx_matches("*.example.org", "mx1.example.org")
    assert not mx_matches("*.example.org", "a.b.example.org")  # RFC 8461 4.1: one label only
    assert not mx_matches("*.example.org", "example.org")
    assert not mx_matches("mail.example.org", "evil-mail.example.org")


# -- fetching and enforcing -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def port() -> int:
    return common_port()


@pytest.fixture
def policies(ca: trustme.CA) -> Iterator[PolicyServer]:
    with PolicyServer(ca, POLICY_HOST) as server:
        yield server


@pytest.fixture
def zone(dns_server: DnsTestServer) -> DnsTestServer:
    """example.org: MX 10 mx.elsewhere.example (127.0.0.3), 20 mx1.example.org (127.0.0.2); it publishes MTA-STS."""
    dns_server.add(("example.org", "MX", "10 mx.elsewhere.example"), ("example.org", "MX", "20 mx1.example.org"),
                   ("mx.elsewhere.example", "A", MX2), ("mx1.example.org", "A", MX1),
                   ("_mta-sts.example.org", "TXT", "v=STSv1; id=20261123"), (POLICY_HOST, "A", "127.0.0.1"))
    return dns_server


def resolver(dns: DnsTestServer) -> DnsResolver:
    return DnsResolver([dns.address], timeout=0.5)


def sts(dns: DnsTestServer, server: PolicyServer, context: ssl.SSLContext, clock: Clock | None = None) -> MtaSts:
    return MtaSts(resolver(dns), ssl_context=context, https_port=server.port, clock=clock or Clock())


def direct(dns: DnsTestServer, port: int, mta_sts: MtaSts, context: ssl.SSLContext) -> DirectTransport:
    return DirectTransport(resolver(dns), hostname=HOST, port=port, mta_sts=mta_sts, tls_context=context,
                           connect_timeout=1.0, command_timeout=2.0)


async def test_the_policy_is_fetched_over_verified_https_and_cached_until_the_id_changes_or_max_age(
        zone: DnsTestServer, policies: PolicyServer, client_context: ssl.SSLContext) -> None:
    policies.serve(POLICY_HOST, mx=["mx1.example.org"], max_age=3600)
    clock = Clock()
    fetcher = sts(zone, policies, client_context, clock)
    policy = await fetcher.policy_for("example.org")
    assert policy is not None and policy.mode == "enforce" and policy.mx == ["mx1.example.org"]
    assert policies.sni == [POLICY_HOST] and policies.requests == [(POLICY_HOST, "/.well-known/mta-sts.txt")]
    assert await fetcher.policy_for("Example.ORG") == policy and policies.count(POLICY_HOST) == 1
    zone.remove("_mta-sts.example.org", "TXT")
    zone.add(("_mta-sts.example.org", "TXT", "v=STSv1; id=20261124"))
    policies.serve(POLICY_HOST, mx=["mx1.example.org", "mx2.example.org"], max_age=3600)
    DnsResolverCache.clear(fetcher)
    assert (await fetcher.policy_for("example.org")).mx == ["mx1.example.org", "mx2.example.org"]  # type: ignore[union-attr]
    assert policies.count(POLICY_HOST) == 2
    zone.remove("_mta-sts.example.org", "TXT")  # gone from DNS: the cached policy stays in force till max_age
    DnsResolverCache.clear(fetcher)
    assert await fetcher.policy_for("example.org") is not None
    clock.now += 3601
    assert await fetcher.policy_for("example.org") is None


class DnsResolverCache:
    @staticmethod
    def clear(fetcher: MtaSts) -> None:
        resolver = fetcher.resolver
        assert isinstance(resolver, DnsResolver)
        resolver.clear_cache()


@pytest.mark.parametrize("answer", [Answer(status=404, body="no"), Answer(status=301, location="https://x.example/"),
                                    Answer(body="version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n",
                                           content_type="text/html"),
                                    Answer(body="not a policy")])
async def test_a_policy_that_cannot_be_had_is_no_policy(zone: DnsTestServer, policies: PolicyServer,
                                                        client_context: ssl.SSLContext, answer: Answer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    policies.answers[POLICY_HOST] = answer
    with caplog.at_level(logging.WARNING, logger="appliance.outbound.mtasts"):
        assert await sts(zone, policies, client_context).policy_for("example.org") is None
    assert "not fetched" in caplog.text


async def test_a_policy_server_with_an_untrusted_certificate_is_no_policy(
        zone: DnsTestServer, client_context: ssl.SSLContext) -> None:
    with PolicyServer(trustme.CA(), POLICY_HOST) as impostor:
        impostor.serve(POLICY_HOST, mx=["mx.elsewhere.example"])
        with pytest.raises(MtaStsError, match="certificate"):
            await sts(zone, impostor, client_context).fetch("example.org")


async def test_enforce_skips_an_mx_the_policy_does_not_name_and_delivers_over_verified_tls(
        zone: DnsTestServer, policies: PolicyServer, ca: trustme.CA, client_context: ssl.SSLContext,
        port: int) -> None:
    policies.serve(POLICY_HOST, mx=["mx1.example.org"])
    with Peer(MX2, port) as elsewhere, Peer(MX1, port, tls=server_context(ca, "mx1.example.org")) as mx1:
        transport = direct(zone, port, sts(zone, policies, client_context), client_context)
        outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        [got] = mx1.messages()
        assert elsewhere.connections == 0, "the better-preferred MX is not in the policy: never contacted"
    assert outcome.status == "sent" and got.tls


async def test_enforce_with_no_matching_mx_refuses_to_deliver_and_retries(
        zone: DnsTestServer, policies: PolicyServer, client_context: ssl.SSLContext, port: int) -> None:
    policies.serve(POLICY_HOST, mx=["*.other.example"])
    with Peer(MX2, port) as elsewhere, Peer(MX1, port) as mx1:
        transport = direct(zone, port, sts(zone, policies, client_context), client_context)
        outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        assert elsewhere.connections == mx1.connections == 0
    assert outcome.status == "retry" and "matches its MTA-STS policy" in outcome.detail


async def test_enforce_refuses_an_mx_without_starttls_or_with_a_certificate_for_another_name(
        zone: DnsTestServer, policies: PolicyServer, ca: trustme.CA, client_context: ssl.SSLContext,
        port: int) -> None:
    policies.serve(POLICY_HOST, mx=["mx1.example.org"])
    fetcher = sts(zone, policies, client_context)
    with Peer(MX1, port) as clear:
        transport = direct(zone, port, fetcher, client_context)
        no_tls = await transport.deliver(delivery(1))
        await transport.aclose()
        assert clear.messages() == []
    with Peer(MX1, port, tls=server_context(ca, "mx.elsewhere.example")) as wrong_name:
        transport = direct(zone, port, fetcher, client_context)
        bad_cert = await transport.deliver(delivery(2))
        await transport.aclose()
        assert wrong_name.messages() == []
    assert no_tls.status == "retry" and "does not offer STARTTLS" in no_tls.detail
    assert bad_cert.status == "retry" and "certificate" in bad_cert.detail.lower()


async def test_testing_mode_delivers_anyway_and_logs_what_enforce_would_refuse(
        zone: DnsTestServer, policies: PolicyServer, client_context: ssl.SSLContext, port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    policies.serve(POLICY_HOST, mode="testing", mx=["mx1.example.org"])
    with Peer(MX2, port) as elsewhere:
        transport = direct(zone, port, sts(zone, policies, client_context), client_context)
        with caplog.at_level(logging.WARNING, logger="appliance.outbound"):
            outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        assert len(elsewhere.messages()) == 1
    assert outcome.status == "sent"
    assert "(testing): MX mx.elsewhere.example is not in its policy" in caplog.text
    assert "(testing)" in caplog.text and "does not offer STARTTLS" in caplog.text


async def test_a_domain_without_the_record_is_delivered_as_before(dns_server: DnsTestServer, policies: PolicyServer,
                                                                 client_context: ssl.SSLContext, port: int) -> None:
    dns_server.add(("example.org", "MX", "10 mx1.example.org"), ("mx1.example.org", "A", MX1))
    with Peer(MX1, port) as mx1:
        transport = direct(dns_server, port, sts(dns_server, policies, client_context), client_context)
        outcome = await transport.deliver(delivery(1))
        await transport.aclose()
        assert len(mx1.messages()) == 1
    assert outcome.status == "sent" and policies.requests == []
