"""``direct``: to each recipient domain's own mail servers, found in DNS (RFC 5321 5.1).

- The MX records, in preference order, equal preferences in random order;
  with no MX at all, the domain itself is the one host ("implicit MX"); a
  null MX (``0 .``, RFC 7505) says the domain takes no mail: a final failure.
- Each host's addresses (A, then AAAA), tried in turn until one answers; a
  host that cannot be reached, greets with an error, or refuses before any
  recipient (4xx) gives way to the next. A 5xx to MAIL, RCPT or DATA is the
  domain's answer: no other host is asked.
- STARTTLS when offered (opportunistic, RFC 7435; a failed handshake is
  retried in clear on the same host), except where MTA-STS (RFC 8461) says
  otherwise: ``enforce`` keeps only the MX hosts the policy names and needs
  TLS with a certificate valid for the MX name there (else the host is
  skipped, and with none left the message waits: RFC 8461 5.1 forbids a
  permanent failure on that ground); ``testing`` delivers as ``enforce``
  would, but where that fails, logs it and delivers anyway.
- DNS that does not answer is a temporary failure; no MX and no address is
  a final one.

Mail goes to port 25 (``port`` overrides it, for tests).
"""

from __future__ import annotations

__all__ = ["DirectTransport", "MxLookup", "mail_hosts"]

import logging
import random
import ssl
from collections.abc import Callable

import msgspec

from appliance.errors import DnsTemporaryError
from appliance.mail import ascii_domain
from appliance.mailauth.dns import Resolver
from appliance.outbound.model import Delivery, DeliveryOutcome
from appliance.outbound.mtasts import MtaSts, MtaStsPolicy
from appliance.outbound.transports.smtp import Closer, SmtpPeer, TlsMode, Tried, send_to

log = logging.getLogger("appliance.outbound")

SMTP_PORT = 25
MAX_HOSTS = 10
"""MX hosts tried in one attempt at most."""
MAX_ADDRESSES = 2
"""Addresses of one host tried at most in one attempt (RFC 5321 5.1 asks for at least two in all)."""


class MxLookup(msgspec.Struct, frozen=True, kw_only=True):
    """A domain's mail hosts, or why it has none."""

    hosts: list[str]
    null_mx: bool = False
    """The domain says it takes no mail (RFC 7505)."""


async def mail_hosts(resolver: Resolver, domain: str, *, rng: Callable[[], float] = random.random) -> MxLookup:
    """The hosts to try for ``domain``, best first (RFC 5321 5.1); ``DnsTemporaryError`` when DNS does not say."""
    records = await resolver.query(domain, "MX")
    parsed: list[tuple[int, float, str]] = []
    for record in records:
        preference, _, host = record.partition(" ")
        host = host.strip().rstrip(".")
        if not host or host == "@":
            return MxLookup(hosts=[], null_mx=True)  # "0 ." (RFC 7505 3: no other MX may stand beside it)
        if preference.isdigit():
            parsed.append((int(preference), rng(), host.lower()))
    if not records:
        return MxLookup(hosts=[domain])  # the implicit MX: the domain's own address records
    return MxLookup(hosts=list(dict.fromkeys(host for _, _, host in sorted(parsed))))


class DirectTransport:
    """Delivers to the recipient domain's MX hosts."""

    name = "direct"

    def __init__(self, resolver: Resolver, *, hostname: str, port: int = SMTP_PORT, mta_sts: MtaSts | None = None,
                 tls_context: ssl.SSLContext | None = None, connect_timeout: float = 30.0,
                 command_timeout: float = 300.0, rng: Callable[[], float] = random.random) -> None:
        self.resolver = resolver
        self.hostname = hostname
        self.port = port
        self.mta_sts = mta_sts
        self.tls_context = tls_context
        """Verifies MX certificates where MTA-STS asks for it (the system's trust store when None)."""
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.rng = rng
        self._closer = Closer()

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        domain = ascii_domain(delivery.recipients[0].rpartition("@")[2])
        try:
            lookup = await mail_hosts(self.resolver, domain, rng=self.rng)
        except DnsTemporaryError as exc:
            return _retry(f"MX of {domain} unknown: {exc}")
        if lookup.null_mx:
            return DeliveryOutcome(status="failed", code=None, peer=None,
                                   detail=f"5.1.10 {domain} accepts no mail (null MX, RFC 7505)")
        policy = await self.mta_sts.policy_for(domain) if self.mta_sts is not None else None
        hosts = lookup.hosts
        if policy is not None and policy.mode != "none":
            hosts = self._apply_policy(domain, policy, hosts)
            if not hosts:
                return _retry(f"no MX host of {domain} ({', '.join(lookup.hosts)}) matches its MTA-STS policy "
                              f"(mode enforce, mx {', '.join(policy.mx)}): not delivered (RFC 8461 5.1)")
        tls: TlsMode = "verified" if policy is not None and policy.mode != "none" else "opportunistic"
        testing = policy is not None and policy.mode == "testing"
        failures: list[str] = []
        any_address = False
        for host in hosts[:MAX_HOSTS]:
            try:
                addresses = await self._addresses(host)
            except DnsTemporaryError as exc:
                failures.append(f"{host}: address unknown ({exc})")
                any_address = True  # unknown is not "none": the domain may well exist
                continue
            if not addresses:
                failures.append(f"{host}: no A or AAAA record")
                continue
            any_address = True
            for address in addresses[:MAX_ADDRESSES]:
                tried = await self._try(delivery, domain, host, address, tls, testing)
                if not tried.next_host:
                    return tried.outcome
                failures.append(tried.outcome.detail)
        if not any_address:
            return DeliveryOutcome(status="failed", code=None, peer=None,
                                   detail=f"5.1.2 no mail server for {domain}: " + "; ".join(failures))
        return _retry("; ".join(failures)[:2000])

    def _apply_policy(self, domain: str, policy: MtaStsPolicy, hosts: list[str]) -> list[str]:
        matching = [h for h in hosts if policy.matches(h)]
        if policy.mode == "enforce":
            for host in hosts:
                if host not in matching:
                    log.warning("MTA-STS %s: MX %s is not in its policy (mx %s): skipped", domain, host,
                                ", ".join(policy.mx))
            return matching
        for host in hosts:  # testing: report only (RFC 8461 5: a TLSRPT report would say it)
            if host not in matching:
                log.warning("MTA-STS %s (testing): MX %s is not in its policy (mx %s); delivering anyway",
                            domain, host, ", ".join(policy.mx))
        return hosts

    async def _try(self, delivery: Delivery, domain: str, host: str, address: str, tls: TlsMode,
                   testing: bool) -> Tried:
        peer = SmtpPeer(address=address, port=self.port, server_hostname=host, local_hostname=self.hostname,
                        tls=tls, tls_context=self.tls_context, connect_timeout=self.connect_timeout,
                        command_timeout=self.command_timeout)
        tried = await send_to(peer, delivery, self._closer)
        if tried.tls_failed and testing:
            log.warning("MTA-STS %s (testing): %s; delivering without verified TLS", domain, tried.outcome.detail)
            peer = msgspec.structs.replace(peer, tls="opportunistic")
            tried = await send_to(peer, delivery, self._closer)
        if tried.tls_failed and peer.tls == "opportunistic":
            log.info("STARTTLS with %s failed (%s): trying in clear (opportunistic TLS, RFC 7435)", peer.label,
                     tried.outcome.detail)
            tried = await send_to(msgspec.structs.replace(peer, tls="none"), delivery, self._closer)
        return tried

    async def _addresses(self, host: str) -> list[str]:
        v4 = await self.resolver.query(host, "A")
        v6 = await self.resolver.query(host, "AAAA") if len(v4) < MAX_ADDRESSES else []
        return v4 + v6

    async def aclose(self) -> None:
        await self._closer.aclose()


def _retry(detail: str) -> DeliveryOutcome:
    return DeliveryOutcome(status="retry", code=None, detail=detail, peer=None)
