"""The mail domains of a running appliance (or of the CLI on its files): add one, say what to publish,
check it and keep the history, serve the MTA-STS policy.

What the manifest is made of comes from the configuration: the MX host is
``hostname``, the public address ``[domains] public_address``, the reports go
to ``<[domains] report_local_part>@<domain>``, the policy's mode is
``[domains] mta_sts_mode``; the DKIM keys come from a ``DkimKeys``.
"""

from __future__ import annotations

__all__ = [
    "DomainExists",
    "UnknownDomain",
    "add_domain",
    "check_now",
    "dkim_keys",
    "domain_manifest",
    "facts_for",
    "known_domain",
    "mta_sts_domain",
    "poll_domains",
    "register_domain",
    "served_policy",
    "verification_resolver",
]

import asyncio
import logging
from datetime import datetime

import duckdb

from appliance.config import ApplianceConfig
from appliance.domains.keys import DkimKeys, DkimPublicKey, LocalDkimKeys
from appliance.domains.manifest import DnsManifest, ManifestFacts, manifest
from appliance.domains.mta_sts import policy, policy_id
from appliance.domains.verify import DomainCheck, verify_all, verify_domain
from appliance.mailauth.dns import Resolver, resolver_for
from appliance.mailauth.keys import selectors_for, valid_domain
from appliance.outbound.mtasts import MtaStsPolicy
from appliance.store import domains as store
from appliance.store.database import Database, utc

log = logging.getLogger("appliance.domains")


class DomainExists(Exception):
    """The domain was added already."""


class UnknownDomain(LookupError):
    """No such domain was added."""


def known_domain(name: str) -> str:
    """``name`` as stored (lowercase A-labels); ValueError quoting it when it is not a domain name."""
    return valid_domain(name)


def dkim_keys(config: ApplianceConfig) -> DkimKeys:
    """Where the keys of ``config``'s domains are: the appliance's own (those outbound mail is signed with)."""
    return LocalDkimKeys(config.data_path, config.outbound.dkim_selector)


def served_policy(config: ApplianceConfig) -> MtaStsPolicy:
    """The MTA-STS policy of every domain: the appliance's hostname is the one MX."""
    return policy(config.domains.mta_sts_mode, config.hostname)


def facts_for(config: ApplianceConfig, domain: str, keys: list[DkimPublicKey]) -> ManifestFacts:
    """The manifest's facts for ``domain`` under ``config``."""
    address = config.domains.public_address
    return ManifestFacts(
        mx_host=config.hostname, public_addresses=(address,) if address else (), dkim_keys=tuple(keys),
        report_address=f"{config.domains.report_local_part}@{domain}", mta_sts_mode=config.domains.mta_sts_mode,
        mta_sts_policy_id=policy_id(served_policy(config)))


async def domain_manifest(config: ApplianceConfig, keys: DkimKeys, domain: str) -> DnsManifest:
    """What ``domain`` must publish."""
    return manifest(domain, facts_for(config, domain, await keys.public_keys(domain)))


def verification_resolver(config: ApplianceConfig) -> Resolver:
    """A resolver of its own for one round of checks: a record the operator just fixed is not hidden by an
    answer the gate's resolver still caches."""
    return resolver_for(config.dns.nameservers, config.dns.timeout, offline=config.dns.offline)


def _selectors(config: ApplianceConfig) -> list[str]:
    return list(selectors_for(config.outbound.dkim_selector))


def register_domain(con: duckdb.DuckDBPyConnection, config: ApplianceConfig, name: str,
                    *, now: datetime) -> store.DomainRow:
    """Add ``name`` on an open connection (the CLI's way): its keys made, its row written.
    ValueError for a bad name, DomainExists when it is there."""
    domain = known_domain(name)
    if store.get_domain(con, domain) is not None:
        raise DomainExists(domain)
    LocalDkimKeys(config.data_path, config.outbound.dkim_selector).ensure(domain)
    store.add_domain(con, domain, _selectors(config), now=now)
    row = store.get_domain(con, domain)
    assert row is not None
    return row


async def add_domain(db: Database, config: ApplianceConfig, name: str) -> store.DomainRow:
    """Add ``name`` through the running appliance's writer; keys are made outside it (RSA keygen takes a
    while and the writer serves the mail). ValueError for a bad name, DomainExists when it is there."""
    domain = known_domain(name)
    if await db.read(lambda con: store.get_domain(con, domain)) is not None:
        raise DomainExists(domain)
    await asyncio.to_thread(LocalDkimKeys(config.data_path, config.outbound.dkim_selector).ensure, domain)
    selectors = _selectors(config)

    def write(con: duckdb.DuckDBPyConnection) -> store.DomainRow | None:
        if not store.add_domain(con, domain, selectors, now=utc()):
            return None
        return store.get_domain(con, domain)

    row = await db.write(write)
    if row is None:
        raise DomainExists(domain)
    log.info("domain %s added (DKIM selectors %s)", domain, ", ".join(selectors))
    return row


async def check_now(db: Database, config: ApplianceConfig, domain: str, *, keys: DkimKeys | None = None,
                    resolver: Resolver | None = None) -> DomainCheck:
    """Check ``domain``'s records now and record the result; UnknownDomain when it was not added."""
    if await db.read(lambda con: store.get_domain(con, domain)) is None:
        raise UnknownDomain(domain)
    expected = await domain_manifest(config, keys or dkim_keys(config), domain)
    check = await verify_domain(expected, resolver or verification_resolver(config), now=utc())
    await db.write(lambda con: store.record_check(con, check))
    return check


async def poll_domains(db: Database, config: ApplianceConfig, *, keys: DkimKeys | None = None,
                       resolver: Resolver | None = None) -> list[DomainCheck]:
    """Check every domain's records and record each result (the scheduled check, every
    ``[domains] verify_interval`` seconds); a domain not as expected is logged."""
    found_keys = keys or dkim_keys(config)
    rows = await db.read(store.list_domains)
    manifests = [await domain_manifest(config, found_keys, row.name) for row in rows]
    checks = await verify_all(manifests, resolver or verification_resolver(config), now=utc())

    def write(con: duckdb.DuckDBPyConnection) -> None:
        for check in checks:
            store.record_check(con, check)

    if checks:
        await db.write(write)
    for check in checks:
        if not check.ok:
            bad = [f"{r.type} {r.name}: {r.state}" for r in check.records if r.state != "ok"]
            log.warning("domain %s: DNS not as the manifest asks (%s)", check.domain, "; ".join(bad))
    return checks


def mta_sts_domain(host: str | None) -> str | None:
    """The domain whose policy a request for ``host`` (``mta-sts.<domain>[:port]``) asks for, or None."""
    if not host:
        return None
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal names no domain
        return None
    name = (name.rpartition(":")[0] if ":" in name else name).rstrip(".")
    prefix = "mta-sts."
    if not name.startswith(prefix):
        return None
    try:
        return known_domain(name[len(prefix):])
    except ValueError:
        return None
