"""SPF (RFC 7208) on pyspf, with every DNS lookup going through our async ``Resolver``.

pyspf is synchronous and would do its own DNS; here it runs in a worker
thread and its one DNS entry point, ``query.dns``, is overridden to ask the
event loop's resolver. So SPF shares the cache, and a DNS failure becomes
temperror instead of an empty answer (which pyspf would read as "none").
Nothing global in pyspf is modified, so concurrent checks do not interfere.
"""

from __future__ import annotations

__all__ = ["SPF_TIME_LIMIT", "check_spf"]

import asyncio
import concurrent.futures
import ipaddress
import re
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

with warnings.catch_warnings():
    # pyspf 2.0.14 has an invalid escape in a docstring: compiling it (no cached .pyc)
    # warns, which is an import error wherever warnings are errors, as in our tests.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    import spf as pyspf

from appliance.errors import DnsTemporaryError
from appliance.mailauth.dns import Resolver
from appliance.mailauth.results import SpfResult, Verdict

SPF_TIME_LIMIT = 20.0
"""Seconds for a whole check (RFC 7208 4.6.4: at least 20 s before giving up as temperror)."""

# pyspf's threads mostly wait on DNS answered by the event loop; a pool of their own keeps
# slow DNS from filling the default executor that DKIM's CPU work runs in.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="spf")

_RESULTS: dict[str, Verdict] = {
    "pass": "pass", "fail": "fail", "softfail": "softfail", "neutral": "neutral",
    "none": "none", "temperror": "temperror", "permerror": "permerror",
}
_LABEL = re.compile(r"[^\s\[\]:@/\\]{1,63}")


def _valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a multi-label name with no empty or over-long label (and not an IP literal)."""
    labels = domain.split(".")
    return (len(domain) <= 253 and len(labels) >= 2 and not labels[-1].isdigit()
            and all(_LABEL.fullmatch(label) for label in labels))


RESULT_TTL = 60.0
"""Seconds a definite SPF result is reused for the same (client IP, sender, HELO), per resolver.

pyspf runs in a worker thread with each lookup bridged back to the event loop;
a busy sender's repeat messages skip all of that. Short, so a changed record
is seen within a minute; temporary errors are never reused.
"""
_RESULT_CACHE_SIZE = 10_000
_results: weakref.WeakKeyDictionary[Resolver, OrderedDict[tuple[str, str, str], tuple[float, SpfResult]]] = (
    weakref.WeakKeyDictionary())


async def check_spf(client_ip: str, helo: str, mail_from: str, resolver: Resolver) -> SpfResult:
    """check_host() for the MAIL FROM identity, or HELO's when MAIL FROM is null (RFC 7208 2.4)."""
    try:
        cache = _results[resolver]
    except KeyError:
        cache = _results[resolver] = OrderedDict()
    except TypeError:  # a resolver that cannot be weakly referenced: no reuse
        cache = OrderedDict()
    key = (client_ip, mail_from.lower(), helo.lower())
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and hit[0] > now:
        return hit[1]
    found = await _check_spf(client_ip, helo, mail_from, resolver)
    if found.result != "temperror":
        cache[key] = (now + RESULT_TTL, found)
        cache.move_to_end(key)
        while len(cache) > _RESULT_CACHE_SIZE:
            cache.popitem(last=False)
    return found


async def _check_spf(client_ip: str, helo: str, mail_from: str, resolver: Resolver) -> SpfResult:
    sender = mail_from.strip().removeprefix("<").removesuffix(">").strip()
    identity: Literal["mailfrom", "helo"]
    if sender:
        identity = "mailfrom"
        local, at, domain = sender.rpartition("@")
        if not at:  # no local-part at all: RFC 7208 4.3 says use "postmaster"
            local, domain = "postmaster", sender
    else:
        identity = "helo"
        local, domain = "postmaster", helo.strip()
    domain = domain.rstrip(".").lower()
    # pyspf splits the address at its first "@"; a quoted local-part holding one
    # would shift the domain, so such a local-part is replaced (it only feeds %{l}).
    if not local or "@" in local:
        local = "postmaster"

    def result(word: Verdict, detail: str) -> SpfResult:
        return SpfResult(result=word, domain=domain, identity=identity, detail=detail)

    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return result("permerror", f"client address {client_ip!r} is not an IP address")
    if not _valid_domain(domain):
        return result("none", f"{domain or 'empty'} {identity} domain is not a valid domain name")

    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + SPF_TIME_LIMIT
    query = _BridgedQuery(
        i=client_ip, s=f"{local}@{domain}", h=helo.strip() or domain,
        lookup=lambda name, rdtype: _lookup(loop, resolver, name, rdtype, deadline),
    )
    try:
        word, _code, explanation = await loop.run_in_executor(_EXECUTOR, query.check)
    except Exception as exc:  # pyspf fault on hostile records: permanent, like the record
        return result("permerror", f"SPF evaluation failed: {exc}")
    verdict = _RESULTS.get(str(word), "permerror")
    detail = str(explanation)
    if query.mechanism and verdict not in ("temperror", "permerror"):
        matched = f"mechanism {query.mechanism!r} matched"
        detail = f"{detail} ({matched})" if detail else matched
    return result(verdict, detail)


def _lookup(loop: asyncio.AbstractEventLoop, resolver: Resolver, name: str, rdtype: str,
            deadline: float) -> list[str]:
    """Run one resolver query on the event loop from pyspf's worker thread."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise pyspf.TempError("DNS: SPF time limit exceeded")
    try:
        future = asyncio.run_coroutine_threadsafe(resolver.query(name, rdtype), loop)
    except RuntimeError as exc:  # the loop is gone (the caller gave up)
        raise pyspf.TempError(f"DNS: {exc}") from None
    try:
        return future.result(timeout=remaining)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise pyspf.TempError("DNS: SPF time limit exceeded") from None
    except concurrent.futures.CancelledError:
        raise pyspf.TempError("DNS: lookup cancelled") from None
    except DnsTemporaryError as exc:
        raise pyspf.TempError(f"DNS {exc}") from None


class _BridgedQuery(pyspf.query):  # type: ignore[misc]  # pyspf is untyped
    """pyspf's query with its DNS answered by our resolver."""

    def __init__(self, *, i: str, s: str, h: str, lookup: Callable[[str, str], list[str]]) -> None:
        super().__init__(i=i, s=s, h=h, strict=True)
        self._lookup = lookup

    def dns(self, name: Any, qtype: str, cnames: Any = None,
            ignore_void: bool = False) -> list[Any]:
        """pyspf's DNS entry point, in its formats: TXT as lists of bytes, MX as (pref, host).

        CNAMEs are already followed by the resolver. The void-lookup limit of
        RFC 7208 4.6.4 is kept as pyspf counts it.
        """
        if not name:
            raise pyspf.PermError("empty domain name in SPF evaluation")
        name = str(name).removesuffix(".").lower()
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a valid DNS name: nothing there (as pyspf does)
        key = (name, qtype)
        if key in self.cache:
            result: list[Any] = self.cache[key]
        else:
            values = self._lookup(name, qtype)
            result = [_convert(qtype, v) for v in values]
            self.cache[key] = result
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def validated_ptrs(self) -> list[str]:
        """RFC 7208 5.5: PTR names whose A/AAAA include the client. A DNS error on the PTR
        lookup means no match, on one name's address lookup skips that name."""
        try:
            names = self.dns_ptr(self.i)[:pyspf.MAX_PTR]
        except pyspf.TempError:
            return []
        validated = []
        for name in names:
            try:
                addresses = self.dns_a(name, self.A)
            except pyspf.TempError:
                continue
            if self.cidrmatch(addresses, self.cidrmax):
                validated.append(name)
        return validated


def _convert(qtype: str, value: str) -> Any:
    if qtype in ("TXT", "SPF"):
        return [value.encode("utf-8")]
    if qtype == "MX":
        preference, _, host = value.partition(" ")
        return (int(preference) if preference.isdigit() else 0, host.strip())
    return value
