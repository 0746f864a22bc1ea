"""Mail domains over HTTP: add (admin), the DNS manifest, checks and their history; and the MTA-STS policy
(``/.well-known/mta-sts.txt``, unauthenticated: senders fetch it) chosen by the ``Host`` header."""

from __future__ import annotations

__all__ = ["DomainController", "mta_sts_policy"]

from datetime import datetime
from typing import Annotated

import duckdb
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from appliance.api.auth import admin_guard
from appliance.config import ApplianceConfig
from appliance.domains import service
from appliance.domains.keys import DkimKeys
from appliance.domains.manifest import DnsManifest
from appliance.domains.mta_sts import policy_text
from appliance.domains.render import FORMATS, Format, render
from appliance.domains.verify import DomainCheck
from appliance.store import domains as store
from appliance.store.database import Database

_PROBLEM = "application/problem+json"


class AddDomain(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    """The mail domain, e.g. ``example.org`` (an IDN is stored in A-labels)."""


class DomainView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A domain, with its latest check when there is one."""

    name: str
    added_at: datetime
    selectors: tuple[str, ...]
    last_check: DomainCheck | None = None


def _problem(status: int, title: str, detail: str) -> Response[bytes]:
    body = msgspec.json.encode({"type": "about:blank", "title": title, "status": status, "detail": detail})
    return Response(body, status_code=status, media_type=_PROBLEM)


def _view(row: store.DomainRow, last: DomainCheck | None) -> DomainView:
    return DomainView(name=row.name, added_at=row.added_at, selectors=row.selectors, last_check=last)


async def _existing(db: Database, name: str) -> str:
    """The stored form of ``name``; 404 when it was not added (or is no domain name at all)."""
    try:
        domain = service.known_domain(name)
    except ValueError:
        raise NotFoundException(f"no domain {name}") from None
    if await db.read(lambda con: store.get_domain(con, domain)) is None:
        raise NotFoundException(f"no domain {domain}: POST /api/v1/domains adds it")
    return domain


def _domain_keys(state: State, config: NamedDependency[ApplianceConfig]) -> DkimKeys:
    """The mode's source of DKIM public keys (``Runtime.dkim_keys``: Stalwart's own in stalwart mode), else the
    appliance's signing keys: the same the scheduled check reads."""
    chosen: DkimKeys | None = getattr(state.get("runtime"), "dkim_keys", None)
    return chosen if chosen is not None else service.dkim_keys(config)


class DomainController(Controller):
    path = "/api/v1/domains"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute
    dependencies = {"domain_keys": Provide(_domain_keys, sync_to_thread=False)}  # noqa: RUF012 - as guards

    @post("/", status_code=201)
    async def add(self, db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                  data: JSONBody[AddDomain]) -> Response[bytes] | DomainView:
        """Add a domain and make its DKIM keys; 409 when it exists, 400 (problem details) for a bad name."""
        try:
            row = await service.add_domain(db, config, data.domain)
        except ValueError as exc:
            return _problem(400, "not a domain name", f"domain: {exc}")
        except service.DomainExists:
            return _problem(409, "domain exists", f"domain {data.domain!r} was added already")
        return _view(row, None)

    @get("/")
    async def list_domains(self, db: NamedDependency[Database]) -> list[DomainView]:
        rows = await db.read(store.list_domains)
        return [_view(row, None) for row in rows]

    @get("/{domain:str}")
    async def show(self, db: NamedDependency[Database], domain: FromPath[str]) -> DomainView:
        name = await _existing(db, domain)

        def read(con: duckdb.DuckDBPyConnection) -> tuple[store.DomainRow | None, list[DomainCheck]]:
            return store.get_domain(con, name), store.check_history(con, name, limit=1)

        row, last = await db.read(read)
        assert row is not None
        return _view(row, last[0] if last else None)

    @get("/{domain:str}/manifest")
    async def manifest(self, db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                       domain_keys: NamedDependency[DkimKeys], domain: FromPath[str],
                       format: FromQuery[str] = "json") -> Response[bytes] | DnsManifest:
        """The records to publish: ``format=json`` (default), ``bind`` (a zone snippet) or ``table``."""
        if format not in FORMATS:
            raise ClientException(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
        name = await _existing(db, domain)
        expected = await service.domain_manifest(config, domain_keys, name)
        if format == "json":
            return expected
        form: Format = "bind" if format == "bind" else "table"
        return Response(render(expected, form).encode(), media_type="text/plain; charset=utf-8")

    @post("/{domain:str}/verify", status_code=200)
    async def verify(self, db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                     domain_keys: NamedDependency[DkimKeys], domain: FromPath[str]) -> DomainCheck:
        """Check the domain's records now; the result is recorded in its history and returned."""
        return await service.check_now(db, config, await _existing(db, domain), keys=domain_keys)

    @get("/{domain:str}/checks")
    async def checks(self, db: NamedDependency[Database], domain: FromPath[str],
                     limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20) -> list[DomainCheck]:
        """The domain's checks, newest first (``limit``: 1-100, default 20)."""
        name = await _existing(db, domain)
        return await db.read(lambda con: store.check_history(con, name, limit=limit))


@get("/.well-known/mta-sts.txt", include_in_schema=False)
async def mta_sts_policy(request: Request, db: NamedDependency[Database],  # type: ignore[type-arg]
                         config: NamedDependency[ApplianceConfig]) -> Response[str]:
    """The MTA-STS policy (RFC 8461 3.2) of the domain the ``Host`` is ``mta-sts.`` of; 404 for any other host."""
    domain = service.mta_sts_domain(request.headers.get("host"))
    if domain is None or await db.read(lambda con: store.get_domain(con, domain)) is None:
        raise NotFoundException(f"no MTA-STS policy for host {request.headers.get('host', '')!r}")
    return Response(policy_text(service.served_policy(config)), media_type="text/plain")
