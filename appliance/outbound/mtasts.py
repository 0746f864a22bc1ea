"""MTA-STS (RFC 8461): which MX hosts of a domain may get its mail, and only over verified TLS.

A domain publishes ``_mta-sts.<domain> TXT "v=STSv1; id=..."`` and serves
its policy at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``::

    version: STSv1
    mode: enforce
    mx: mail.example.com
    mx: *.example.net
    max_age: 604800

The first half of this module reads those (pure); ``MtaSts`` discovers,
fetches and caches them (I/O). What a policy means for one delivery is the
direct transport's to apply: ``enforce`` delivers only to matching MX hosts,
over STARTTLS with a certificate valid for the MX name (RFC 8461 4.2, 5);
``testing`` delivers as without a policy but logs what would have failed;
``none`` is no policy.

Caching (RFC 8461 3.3, 5.1): a policy is used until its ``max_age`` runs
out; the TXT record is asked on each use, and only a changed ``id`` makes us
fetch again. A policy that cannot be fetched (and no unexpired one cached)
is no policy: delivery goes on as if the domain had none (RFC 8461 5.1 and
its trust-on-first-use model, section 10). The cache is in memory: a restart
forgets it, so the first delivery after a restart trusts what it fetches.
"""

from __future__ import annotations

__all__ = ["MtaSts", "MtaStsError", "MtaStsPolicy", "mx_matches", "parse_policy", "parse_record"]

import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Literal, cast

import httpx
import msgspec

from appliance.errors import DnsTemporaryError
from appliance.mail import ascii_domain
from appliance.mailauth.dns import Resolver

log = logging.getLogger("appliance.outbound.mtasts")

MAX_AGE_LIMIT = 31_557_600
"""The largest ``max_age`` (RFC 8461 3.2: about one year)."""
MAX_POLICY_BYTES = 65_536
"""Policy bodies longer than this are refused (RFC 8461 3.3 suggests a limit)."""
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_WELL_KNOWN = "/.well-known/mta-sts.txt"


_Mode = Literal["enforce", "testing", "none"]


class MtaStsError(ValueError):
    """A policy that cannot be fetched or read; the message says which domain and why."""


class MtaStsPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A domain's policy (RFC 8461 3.2)."""

    mode: _Mode
    mx: list[str]
    """The MX patterns: ``mail.example.com`` or ``*.example.com`` (one leftmost label)."""
    max_age: int
    """Seconds the policy may be cached (and stays in force)."""

    def matches(self, host: str) -> bool:
        """Whether the MX host ``host`` is one the policy names."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def parse_record(records: list[str]) -> str | None:
    """The policy id of a domain's ``_mta-sts`` TXT records, or None when it publishes none usable.

    RFC 8461 3.1: records not starting with ``v=STSv1`` are discarded; unless exactly one
    is left, and it is well-formed, the domain has no available policy.
    """
    candidates = [r for r in records if r.strip().startswith("v=STSv1")]
    if len(candidates) != 1:
        return None
    fields: dict[str, str] = {}
    for item in candidates[0].split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(text: str) -> MtaStsPolicy:
    """The policy in a body (RFC 8461 3.2); MtaStsError naming what is wrong otherwise.

    Lines are ``key: value`` (CRLF or LF); unknown keys are ignored, ``mx`` may repeat.
    """
    values: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MtaStsError(f"policy line {line[:80]!r} is not key: value")
        values.setdefault(key.strip().lower(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise MtaStsError(f"policy version is {values.get('version')!r}, not STSv1")
    modes = values.get("mode", [])
    if len(modes) != 1 or modes[0] not in ("enforce", "testing", "none"):
        raise MtaStsError(f"policy mode {modes!r} is not one of enforce, testing, none")
    ages = values.get("max_age", [])
    if len(ages) != 1 or not ages[0].isdigit() or len(ages[0]) > 10:
        raise MtaStsError(f"policy max_age {ages!r} is not a number of seconds")
    mx = [p.lower().rstrip(".") for p in values.get("mx", []) if p]
    mode = modes[0]
    if mode != "none" and not mx:
        raise MtaStsError(f"policy mode {mode} names no mx")
    return MtaStsPolicy(mode=cast(_Mode, mode), mx=mx, max_age=min(int(ages[0]), MAX_AGE_LIMIT))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: an exact name, or ``*.`` matching exactly one leftmost label (case-insensitive)."""
    pattern = ascii_domain(pattern)
    host = ascii_domain(host)
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


class _Cached(msgspec.Struct, frozen=True):
    policy: MtaStsPolicy
    policy_id: str
    expires: float


class MtaSts:
    """Discovers, fetches and caches domains' policies; ``policy_for`` is what the direct transport asks.

    DNS goes through the appliance's ``Resolver`` (the policy host too), and the
    HTTPS fetch verifies the certificate against ``mta-sts.<domain>`` with
    ``ssl_context`` (the system's trust store by default; a test passes one
    trusting its own CA, and ``https_port`` where its server listens).
    """

    def __init__(self, resolver: Resolver, *, ssl_context: ssl.SSLContext | None = None, https_port: int = 443,
                 timeout: float = 20.0, clock: Callable[[], float] = time.time,
                 failure_ttl: float = 300.0) -> None:
        self.resolver = resolver
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.https_port = https_port
        self.timeout = timeout
        self.clock = clock
        self.failure_ttl = failure_ttl
        """Seconds a failed fetch is not tried again for the same id (one broken domain, one fetch per while)."""
        self._cache: dict[str, _Cached] = {}
        self._failed: dict[tuple[str, str], float] = {}

    async def policy_for(self, domain: str) -> MtaStsPolicy | None:
        """The policy in force for ``domain`` now, or None when it has none (or none could be had)."""
        domain = ascii_domain(domain)
        now = self.clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            del self._cache[domain]
            cached = None
        try:
            policy_id = parse_record(await self.resolver.query(f"_mta-sts.{domain}", "TXT"))
        except DnsTemporaryError as exc:
            # Unknown is not "removed": an unexpired policy stays in force (RFC 8461 5.1).
            log.info("MTA-STS record of %s unknown (%s): %s", domain, exc,
                     "using the cached policy" if cached else "no policy")
            return cached.policy if cached else None
        if policy_id is None or (cached is not None and cached.policy_id == policy_id):
            return cached.policy if cached else None
        if self._failed.get((domain, policy_id), 0.0) > now:
            return cached.policy if cached else None
        try:
            policy = await self.fetch(domain)
        except MtaStsError as exc:
            if len(self._failed) > 1000:
                self._failed = {k: v for k, v in self._failed.items() if v > now}
            self._failed[(domain, policy_id)] = now + self.failure_ttl
            log.warning("MTA-STS policy of %s (id %s) not fetched: %s; %s", domain, policy_id, exc,
                        "the cached policy stays in force" if cached else "delivering as without a policy")
            return cached.policy if cached else None
        self._failed.pop((domain, policy_id), None)
        self._cache[domain] = _Cached(policy, policy_id, now + policy.max_age)
        return policy

    async def fetch(self, domain: str) -> MtaStsPolicy:
        """GET the policy over HTTPS (RFC 8461 3.3): certificate verified, no redirects, 200 only, text/plain."""
        host = f"mta-sts.{ascii_domain(domain)}"
        try:
            addresses = await self.resolver.query(host, "A") or await self.resolver.query(host, "AAAA")
        except DnsTemporaryError as exc:
            raise MtaStsError(f"{host}: {exc}") from None
        if not addresses:
            raise MtaStsError(f"{host} has no address")
        # One connection per fetch, to the address our resolver gave, the certificate checked against
        # the policy host (SNI): a pooled connection made for another name must never serve this one.
        transport = httpx.AsyncHTTPTransport(verify=self.ssl_context, retries=0)
        address = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        url = f"https://{address}:{self.https_port}{_WELL_KNOWN}"
        try:
            async with httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=self.timeout) as client:
                request = client.build_request("GET", url, headers={"host": host},
                                               extensions={"sni_hostname": host})
                response = await client.send(request, stream=True)
                try:
                    if response.status_code != 200:  # RFC 8461 3.3: 3xx redirects are not followed
                        raise MtaStsError(f"https://{host}{_WELL_KNOWN} answered HTTP {response.status_code}")
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if kind != "text/plain":
                        raise MtaStsError(f"https://{host}{_WELL_KNOWN} is {kind or 'untyped'}, not text/plain")
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_POLICY_BYTES:
                            raise MtaStsError(f"https://{host}{_WELL_KNOWN} is over {MAX_POLICY_BYTES} bytes")
                finally:
                    await response.aclose()
        except httpx.HTTPError as exc:
            raise MtaStsError(f"https://{host}{_WELL_KNOWN}: {type(exc).__name__}: {exc}") from None
        try:
            return parse_policy(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise MtaStsError(f"https://{host}{_WELL_KNOWN} is not UTF-8") from None
        except MtaStsError as exc:
            raise MtaStsError(f"https://{host}{_WELL_KNOWN}: {exc}") from None
