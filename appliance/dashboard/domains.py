"""The Domains page: each mail domain's DNS manifest, each record's state at the last check, and the fix.

The manifest and the checks are ``appliance.domains.service``'s, as the admin API and the CLI use
them (the same DKIM keys the scheduled check reads: the API's ``domain_keys`` provider). "Check
now" runs a check, which is kept in the domain's history like the scheduled ones.
"""

from __future__ import annotations

__all__ = ["RecordRow", "domain_check", "domain_page", "domains_list", "record_rows"]

import contextlib
from datetime import datetime
from urllib.parse import quote

import duckdb
import msgspec
from litestar import get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Redirect, Template

from appliance.api.domains import _domain_keys
from appliance.config import ApplianceConfig
from appliance.dashboard.pages import page
from appliance.domains import service
from appliance.domains.keys import DkimKeys
from appliance.domains.manifest import DnsManifest
from appliance.domains.verify import CheckState, DomainCheck, RecordCheck
from appliance.store import domains as store
from appliance.store.database import Database

_KEYS = {"domain_keys": Provide(_domain_keys, sync_to_thread=False)}
_HISTORY = 10
"""Checks listed on a domain's page."""


class RecordRow(msgspec.Struct, frozen=True, kw_only=True):
    """One record to publish (or a PTR to ask for) and what the last check found of it."""

    name: str
    type: str
    value: str
    ttl: int | None
    purpose: str
    note: str
    state: CheckState | None
    """None: not checked yet (no check since the domain was added, or the manifest changed since)."""
    found: tuple[str, ...]
    advice: str


class DomainSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    added_at: datetime
    last_check: DomainCheck | None


def record_rows(expected: DnsManifest, check: DomainCheck | None) -> list[RecordRow]:
    """The manifest's records and PTRs in order, each with its state in ``check`` (matched by name, type and
    expected value, so a check made before a key rotation does not vouch for the new record)."""
    seen: dict[tuple[str, str, str], RecordCheck] = {}
    for found in check.records if check is not None else ():
        seen.setdefault((found.name, found.type, found.expected), found)

    def row(name: str, type_: str, value: str, ttl: int | None, purpose: str, note: str) -> RecordRow:
        found = seen.get((name, type_, value))
        return RecordRow(name=name, type=type_, value=value, ttl=ttl, purpose=purpose, note=note,
                         state=found.state if found else None, found=found.found if found else (),
                         advice=found.advice if found else "")

    rows = [row(r.name, r.type, r.value, r.ttl, r.purpose, r.note) for r in expected.records]
    rows += [row(p.name, "PTR", p.target, None, "ptr", p.note) for p in expected.ptr]
    return rows


def _summaries(con: duckdb.DuckDBPyConnection) -> list[DomainSummary]:
    out = []
    for domain in store.list_domains(con):
        last = store.check_history(con, domain.name, limit=1)
        out.append(DomainSummary(name=domain.name, added_at=domain.added_at, last_check=last[0] if last else None))
    return out


@get("/domains", name="ui_domains")
async def domains_list(db: NamedDependency[Database]) -> Template:
    """Every mail domain and whether its last check found its records as the manifest asks."""
    domains = await db.read(_summaries)
    return page("domains.html", current="domains", title="Domains", domains=domains)


@get("/domains/{domain:str}", name="ui_domain", dependencies=_KEYS)
async def domain_page(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                      domain_keys: NamedDependency[DkimKeys], domain: FromPath[str]) -> Template:
    """One domain: each record to publish with its state and what to do; the PTR; the history of checks."""
    try:
        name = service.known_domain(domain)
    except ValueError:
        name = ""
    row = await db.read(lambda con: store.get_domain(con, name)) if name else None
    if row is None:
        return page("not_found.html", current="domains", title="Not found", status_code=404,
                    what=f"mail domain {domain} (appliance domains add {domain} adds it)")
    expected = await service.domain_manifest(config, domain_keys, name)
    history = await db.read(lambda con: store.check_history(con, name, limit=_HISTORY))
    last = history[0] if history else None
    return page("domain.html", current="domains", title=f"Domain {name}", domain=row, manifest=expected,
                rows=record_rows(expected, last), last=last, history=history)


@post("/domains/{domain:str}/verify", status_code=303, dependencies=_KEYS)
async def domain_check(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                       domain_keys: NamedDependency[DkimKeys], domain: FromPath[str]) -> Redirect:
    """Check the domain's records now (kept in its history), then show them."""
    with contextlib.suppress(ValueError, service.UnknownDomain):  # the page it goes back to says so
        await service.check_now(db, config, service.known_domain(domain), keys=domain_keys)
    return Redirect(f"/ui/domains/{quote(domain, safe='')}", status_code=303)
