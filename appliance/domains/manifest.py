"""The DNS records a mail domain needs for the appliance to receive and send its mail (pure).

``manifest(domain, facts)`` is the whole list, each record with why it is
there: MX to the appliance's host (and that host's A/AAAA when its address is
known), SPF, one DKIM key record per selector, DMARC, MTA-STS (the TXT record
and the ``mta-sts.`` host that serves the policy), TLS-RPT; plus the PTR
(reverse DNS) each public address needs, which lives in the provider's
reverse zone, not in the domain's.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TTL", "DnsManifest", "DnsRecord", "ManifestFacts", "PtrAdvice", "manifest", "relative_name"]

import ipaddress
from typing import Literal

import msgspec

from appliance.domains.keys import DkimPublicKey
from appliance.mailauth.keys import key_value

DEFAULT_TTL = 3600
"""An hour: short enough to correct a mistake the same day, long enough not to matter to resolvers."""
MX_PREFERENCE = 10

RecordType = Literal["MX", "A", "AAAA", "CNAME", "TXT"]
Purpose = Literal["mx", "mx-address", "spf", "dkim", "dmarc", "mta-sts", "mta-sts-host", "tls-rpt"]


class ManifestFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the manifest is made from (all read by the caller: config, keys, the policy)."""

    mx_host: str
    """The appliance's host name (``hostname``): the MX target and the policy's ``mx``."""
    public_addresses: tuple[str, ...] = ()
    """The server's public IPv4/IPv6 addresses; empty when not known (``[domains] public_address`` unset)."""
    dkim_keys: tuple[DkimPublicKey, ...] = ()
    report_address: str
    """Where DMARC aggregate and TLS-RPT reports go (``rua=mailto:``)."""
    mta_sts_mode: Literal["testing", "enforce", "none"]
    mta_sts_policy_id: str


class DnsRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One record to publish. ``value`` in presentation form without quotes or final dots:
    MX ``"10 mx.example.org"``, CNAME ``"mx.example.org"``, TXT the whole text (split when written)."""

    name: str
    """Absolute, without the final dot: ``_dmarc.example.org``."""
    type: RecordType
    value: str
    ttl: int
    purpose: Purpose
    note: str


class PtrAdvice(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The reverse DNS a public address needs; set at the VPS provider, not in the domain's zone."""

    address: str
    name: str
    """The reverse name: ``4.2.0.192.in-addr.arpa``."""
    target: str
    """The host the address must name: the MX host (receivers compare it with the HELO)."""
    note: str


class DnsManifest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    domain: str
    records: tuple[DnsRecord, ...]
    ptr: tuple[PtrAdvice, ...]
    notes: tuple[str, ...]
    """What the manifest could not say or check (no public address known, no DKIM key yet...)."""


def relative_name(name: str, domain: str) -> str | None:
    """``name`` relative to ``domain`` (``@`` for the domain itself), or None when it is outside it."""
    if name == domain:
        return "@"
    if name.endswith("." + domain):
        return name[: -len(domain) - 1]
    return None


def _address_records(name: str, addresses: tuple[str, ...], purpose: Purpose, note: str) -> list[DnsRecord]:
    return [DnsRecord(name=name, type="AAAA" if ipaddress.ip_address(a).version == 6 else "A",
                      value=str(ipaddress.ip_address(a)), ttl=DEFAULT_TTL, purpose=purpose, note=note)
            for a in addresses]


def spf_value(mx_host: str, addresses: tuple[str, ...]) -> str:
    """``v=spf1 ip4:... ip6:... -all``; ``v=spf1 mx -all`` when the address is not known (the MX host's
    addresses then, whatever they are)."""
    if not addresses:
        return "v=spf1 mx -all"
    terms = [f"ip{ipaddress.ip_address(a).version}:{ipaddress.ip_address(a)}" for a in addresses]
    return "v=spf1 " + " ".join(terms) + " -all"


def manifest(domain: str, facts: ManifestFacts) -> DnsManifest:
    """Every record ``domain`` needs, given ``facts``; ``domain`` and ``facts.mx_host`` lowercased A-labels."""
    mx = facts.mx_host.strip().rstrip(".").lower()
    report = f"mailto:{facts.report_address}"
    records: list[DnsRecord] = [
        DnsRecord(name=domain, type="MX", value=f"{MX_PREFERENCE} {mx}", ttl=DEFAULT_TTL, purpose="mx",
                  note="mail for the domain goes to the appliance; no other MX, or mail bypasses its gate"),
    ]
    if facts.public_addresses:
        where = "" if relative_name(mx, domain) is not None else f" (in the zone of {mx}, not {domain})"
        records += _address_records(mx, facts.public_addresses, "mx-address", f"the MX host's address{where}")
    records.append(DnsRecord(
        name=domain, type="TXT", value=spf_value(mx, facts.public_addresses), ttl=DEFAULT_TTL, purpose="spf",
        note="SPF (RFC 7208): only the appliance sends as the domain; one SPF record only, merge with any other"))
    for key in facts.dkim_keys:
        records.append(DnsRecord(
            name=f"{key.selector}._domainkey.{domain}", type="TXT", value=key_value(key), ttl=DEFAULT_TTL,
            purpose="dkim", note=f"DKIM key ({key.kind}) the appliance signs with, selector {key.selector}"))
    records += [
        DnsRecord(name=f"_dmarc.{domain}", type="TXT",
                  value=f"v=DMARC1; p=quarantine; rua={report}; adkim=s; aspf=s", ttl=DEFAULT_TTL,
                  purpose="dmarc", note="DMARC (RFC 7489): unaligned mail claiming the domain goes to spam; "
                                        "aggregate reports to the appliance"),
        DnsRecord(name=f"_mta-sts.{domain}", type="TXT", value=f"v=STSv1; id={facts.mta_sts_policy_id}",
                  ttl=DEFAULT_TTL, purpose="mta-sts",
                  note=f"MTA-STS (RFC 8461), mode {facts.mta_sts_mode}: the id changes with the policy"),
    ]
    sts_host = f"mta-sts.{domain}"
    sts_note = (f"serves https://{sts_host}/.well-known/mta-sts.txt; needs a TLS certificate for {sts_host}")
    if facts.public_addresses:
        records += _address_records(sts_host, facts.public_addresses, "mta-sts-host", sts_note)
    else:
        records.append(DnsRecord(name=sts_host, type="CNAME", value=mx, ttl=DEFAULT_TTL, purpose="mta-sts-host",
                                 note=sts_note))
    records.append(DnsRecord(name=f"_smtp._tls.{domain}", type="TXT", value=f"v=TLSRPTv1; rua={report}",
                             ttl=DEFAULT_TTL, purpose="tls-rpt",
                             note="TLS-RPT (RFC 8460): senders report TLS failures to the appliance"))
    ptr = tuple(PtrAdvice(address=str(ipaddress.ip_address(a)), name=ipaddress.ip_address(a).reverse_pointer,
                          target=mx, note="set at your VPS provider (reverse DNS), not in the domain's zone")
                for a in facts.public_addresses)
    notes = []
    if "." not in mx:
        notes.append(f"the MX host {mx!r} is not a public host name: set hostname to the server's name in DNS")
    if not facts.public_addresses:
        notes.append("no public address known ([domains] public_address): SPF uses the MX host, mta-sts is a "
                     "CNAME, and the PTR of the server's address cannot be given or checked")
    if not facts.dkim_keys:
        notes.append(f"no DKIM keys for {domain} yet: mail leaves unsigned and DMARC fails for it")
    return DnsManifest(domain=domain, records=tuple(records), ptr=ptr, notes=tuple(notes))
