"""Mail authentication: DKIM, SPF and DMARC, with DNS through one async resolver."""

from __future__ import annotations

__all__ = [
    "AuthResults",
    "DkimResult",
    "DmarcResult",
    "DnsResolver",
    "OfflineResolver",
    "Resolver",
    "SpfResult",
    "StaticResolver",
    "Verdict",
    "authenticate",
    "check_spf",
    "evaluate_dmarc",
    "verify_dkim",
]

import asyncio

from appliance.mailauth import dmarc as _dmarc
from appliance.mailauth.dkim import verify_dkim
from appliance.mailauth.dmarc import evaluate_dmarc
from appliance.mailauth.dns import DnsResolver, OfflineResolver, Resolver, StaticResolver
from appliance.mailauth.results import AuthResults, DkimResult, DmarcResult, SpfResult, Verdict
from appliance.mailauth.spf import check_spf


async def authenticate(
    raw: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    from_domain: str,
    resolver: Resolver,
    now: float,
) -> AuthResults:
    """DKIM, SPF and the DMARC record lookup run concurrently; DMARC is then judged on them."""
    dkim, spf, policy = await asyncio.gather(
        verify_dkim(raw, resolver, now),
        check_spf(client_ip, helo, mail_from, resolver),
        _dmarc.discover_policy(from_domain, resolver),
    )
    dmarc = _dmarc.judge(from_domain, dkim, spf, mail_from, policy)
    return AuthResults(spf=spf, dkim=dkim, dmarc=dmarc)
