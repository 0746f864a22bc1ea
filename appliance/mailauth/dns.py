"""DNS for mail authentication: one small async interface and a caching resolver.

Every answer is either data, an empty list (the name or the type does not
exist), or ``DnsTemporaryError``: "unknown" is never reported as "empty",
because an empty answer can turn into a pass or a none further up.
"""

from __future__ import annotations

__all__ = ["DnsResolver", "OfflineResolver", "Resolver", "StaticResolver", "parse_nameserver", "resolver_for"]

import asyncio
import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver

from appliance.errors import DnsTemporaryError

MAX_POSITIVE_TTL = 86_400
"""Cap on how long an answer is cached, whatever TTL the zone asks for."""
MAX_NEGATIVE_TTL = 3_600
"""Cap on negative caching (RFC 2308 section 5 suggests one to three hours)."""
DEFAULT_NEGATIVE_TTL = 60
"""Negative TTL when the answer carries no SOA to take it from (RFC 2308 section 5)."""


class Resolver(Protocol):
    """What mail authentication needs from DNS."""

    async def query(self, name: str, rdtype: str) -> list[str]:
        """The records of one type at one name, as text.

        TXT: the character-strings of each record concatenated (RFC 7208 3.3,
        RFC 6376 3.6.2.2); MX: ``"preference host"``; A/AAAA: the address;
        names (PTR, CNAME, NS) without the final dot. An empty list for
        NXDOMAIN or NODATA. Raises ``DnsTemporaryError`` for a timeout,
        SERVFAIL, REFUSED, a network error, or an answer that stays
        truncated (TC=1) over TCP too: a partial answer is not an answer.
        """
        ...


def parse_nameserver(value: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:5353"``, ``"192.0.2.1"`` or ``"::1"`` as (address, port).

    Raises ValueError naming the bad value.
    """
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"nameserver {value!r}: expected [IPv6]:port")
        port_text = rest[1:] if rest else ""
        if rest and not port_text:
            raise ValueError(f"nameserver {value!r}: missing port after ':'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ValueError(f"nameserver {value!r}: missing port after ':'")
    else:
        # A bare IPv4 address, or a bare IPv6 address (more than one colon).
        host, port_text = text, ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {value!r}: {host!r} is not an IP address") from None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"nameserver {value!r}: port {port_text!r} is not 1-65535")
        port = int(port_text)
    return host, port


def _record_text(rdata: dns.rdata.Rdata) -> str:
    rdtype = rdata.rdtype
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        strings: Iterable[bytes] = rdata.strings  # type: ignore[attr-defined]
        # RFC 7208 3.3 / RFC 6376 3.6.2.2: one record's strings are concatenated, no separator.
        return b"".join(strings).decode("utf-8", "replace")
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.MX:
        exchange: dns.name.Name = rdata.exchange  # type: ignore[attr-defined]
        return f"{rdata.preference} {exchange.to_text(omit_final_dot=True)}"  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.DNAME):
        target: dns.name.Name = rdata.target  # type: ignore[attr-defined]
        return target.to_text(omit_final_dot=True)
    return rdata.to_text()


def _negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308 section 5: the lesser of the SOA's own TTL and its MINIMUM field."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                minimum = int(rrset[0].minimum)
                return max(0, min(rrset.ttl, minimum, MAX_NEGATIVE_TTL))
    return DEFAULT_NEGATIVE_TTL


def _truncated(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.TC)


def _rdtype(rdtype: str) -> dns.rdatatype.RdataType:
    try:
        return dns.rdatatype.RdataType.make(rdtype.upper())
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        raise ValueError(f"unknown DNS record type {rdtype!r}") from None


def _qname(name: str) -> dns.name.Name | None:
    """The absolute name, or None for a name that cannot exist (RFC 1035 2.3.4 limits)."""
    text = name.strip()
    if not text.rstrip("."):
        return None
    try:
        return dns.name.from_text(text if text.endswith(".") else text + ".")
    except (dns.exception.DNSException, ValueError, UnicodeError):
        return None


_CacheKey = tuple[dns.name.Name, dns.rdatatype.RdataType]
_Lookup = asyncio.Task[tuple[str, ...]]


class DnsResolver:
    """A ``Resolver`` on dnspython's async resolver, with an in-memory cache.

    Answers are cached for their TTL (the least along a CNAME chain), NXDOMAIN
    and NODATA for the negative TTL of RFC 2308; temporary errors are not
    cached, so the retry that follows a 451 asks again. Concurrent identical
    queries share one lookup.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        timeout: float = 2.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(nameservers, str):  # one "host:port" given where a list was meant
            nameservers = [nameservers]
        if timeout <= 0:
            raise ValueError(f"DNS timeout {timeout!r} must be positive")
        servers = [parse_nameserver(ns) for ns in nameservers]
        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                raise ValueError(f"no system DNS resolver configured ({exc}); "
                                 "give nameservers as host:port") from None
        resolver.timeout = timeout
        resolver.lifetime = timeout
        self._resolver = resolver
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[_CacheKey, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._inflight: dict[_CacheKey, tuple[asyncio.AbstractEventLoop, _Lookup]] = {}

    async def query(self, name: str, rdtype: str) -> list[str]:
        rdt = _rdtype(rdtype)
        qname = _qname(name)
        if qname is None:
            return []
        key = (qname, rdt)  # dns.name.Name compares case-insensitively
        cached = self._cache.get(key)
        if cached is not None:
            expires, values = cached
            if self._clock() < expires:
                self._cache.move_to_end(key)
                return list(values)
            del self._cache[key]
        loop = asyncio.get_running_loop()
        pending = self._inflight.get(key)
        if pending is None or pending[0] is not loop or pending[1].done():
            task = loop.create_task(self._lookup(key))
            self._inflight[key] = (loop, task)
            task.add_done_callback(functools.partial(self._forget, key))
        else:
            task = pending[1]
        # shield: one caller giving up must not cancel the lookup the others wait on.
        return list(await asyncio.shield(task))

    def clear_cache(self) -> None:
        self._cache.clear()

    def _forget(self, key: _CacheKey, task: _Lookup) -> None:
        current = self._inflight.get(key)
        if current is not None and current[1] is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not logged as lost

    async def _lookup(self, key: _CacheKey) -> tuple[str, ...]:
        qname, rdt = key
        what = f"{qname.to_text(omit_final_dot=True)} {rdt.name}"
        try:
            answer = await self._resolver.resolve(qname, rdt, raise_on_no_answer=False,
                                                  search=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            response = responses.get(qname)
            if _truncated(response):
                raise DnsTemporaryError(f"DNS answer for {what} truncated over UDP and TCP") from None
            self._store(key, (), _negative_ttl(response))
            return ()
        except dns.resolver.YXDOMAIN:
            # A DNAME substitution overflowed the name length: the name cannot exist.
            self._store(key, (), DEFAULT_NEGATIVE_TTL)
            return ()
        except dns.exception.Timeout:
            raise DnsTemporaryError(f"DNS timeout looking up {what}") from None
        except dns.resolver.NoNameservers as exc:
            # Every server answered SERVFAIL, REFUSED or garbage.
            raise DnsTemporaryError(f"DNS failure looking up {what}: {exc}") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTemporaryError(f"DNS error looking up {what}: {exc}") from None
        if _truncated(answer.response):
            # dnspython retries a TC=1 UDP answer over TCP but takes a TC=1 TCP answer as it is:
            # its records (none, or some) are not the whole answer, so nothing is known.
            raise DnsTemporaryError(f"DNS answer for {what} truncated over UDP and TCP")
        if answer.rrset is None:  # NODATA, possibly at the end of a CNAME chain
            self._store(key, (), _negative_ttl(answer.response))
            return ()
        values = tuple(_record_text(rdata) for rdata in answer.rrset)
        ttl = min(answer.chaining_result.minimum_ttl, MAX_POSITIVE_TTL)
        self._store(key, values, ttl)
        return values

    def _store(self, key: _CacheKey, values: tuple[str, ...], ttl: float) -> None:
        if ttl <= 0:
            return  # TTL 0 means "use once" (RFC 1035 3.2.1)
        self._cache[key] = (self._clock() + ttl, values)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)


class StaticResolver:
    """A ``Resolver`` over a fixed table, for tests and for callers that resolved already.

    ``records`` maps ``(name, rdtype)`` to the answer; names listed in
    ``failing`` (as ``(name, rdtype)``, rdtype ``"*"`` for all types) raise
    ``DnsTemporaryError``. Every question asked is appended to ``queries``.
    """

    def __init__(
        self,
        records: Mapping[tuple[str, str], Sequence[str]] | None = None,
        *,
        failing: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._records: dict[tuple[str, str], list[str]] = {}
        for (name, rdtype), values in (records or {}).items():
            self.add(name, rdtype, *values)
        self._failing = {self._key(n, t) for n, t in failing}
        self.queries: list[tuple[str, str]] = []

    @staticmethod
    def _key(name: str, rdtype: str) -> tuple[str, str]:
        return name.strip().rstrip(".").lower(), rdtype.upper()

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self._records.setdefault(self._key(name, rdtype), []).extend(values)

    async def query(self, name: str, rdtype: str) -> list[str]:
        key = self._key(name, rdtype)
        self.queries.append(key)
        if key in self._failing or (key[0], "*") in self._failing:
            raise DnsTemporaryError(f"DNS failure looking up {key[0]} {key[1]} (static)")
        return list(self._records.get(key, ()))


class OfflineResolver:
    """A ``Resolver`` for a machine with no DNS (the sandbox on a laptop offline).

    Every question is a temporary error at once: without DNS nothing is known,
    so rules that require authentication tempfail, and none can pass.
    """

    async def query(self, name: str, rdtype: str) -> list[str]:
        raise DnsTemporaryError(f"DNS is off ([dns] offline = true): {name} {rdtype} is unknown")


def resolver_for(nameservers: Sequence[str], timeout: float, *, offline: bool) -> Resolver:
    """The resolver ``[dns]`` asks for: ``OfflineResolver`` when ``offline``, else a ``DnsResolver``."""
    return OfflineResolver() if offline else DnsResolver(nameservers, timeout=timeout)
