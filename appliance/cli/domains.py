"""``appliance domains add|list|show|verify``: the mail domains, the DNS records each needs, and whether
DNS has them.

``add DOMAIN`` makes the domain's DKIM keys (``data_dir/dkim/<domain>/``, as
``appliance dkim keygen``) and records it; ``show DOMAIN`` prints the records to
publish (``--format table`` for a DNS provider's form, ``bind`` for a zone
file, ``json``); ``verify DOMAIN`` asks DNS now, records the result in the
domain's history, prints each record's state and exits 0 only when all are
ok. Works whether or not the appliance runs (``appliance.cli.backend``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import duckdb
import msgspec

from appliance.cli import backend
from appliance.cli.backend import AdminApi, CommandFailed, reports_failures
from appliance.config import ApplianceConfig
from appliance.domains import service
from appliance.domains.render import FORMATS, render
from appliance.domains.verify import DomainCheck, verify_domain
from appliance.store import domains as store
from appliance.store.database import utc


def register(groups: Any) -> None:
    domains = groups.add_parser("domains", help="mail domains: add, list, show their DNS records, verify them")
    sub = domains.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = sub.add_parser("add", help="add a mail domain and make its DKIM keys")
    backend.add_config_argument(add)
    add.add_argument("domain")
    add.set_defaults(handler=run_add)

    listing = sub.add_parser("list", help="the mail domains")
    backend.add_config_argument(listing)
    listing.set_defaults(handler=run_list)

    show = sub.add_parser("show", help="the DNS records a domain needs")
    backend.add_config_argument(show)
    show.add_argument("domain")
    show.add_argument("--format", choices=FORMATS, default="table",
                      help="table (default; for a provider's form), bind (a zone snippet) or json")
    show.set_defaults(handler=run_show)

    verify = sub.add_parser("verify", help="check a domain's records in DNS now (exit 0 only when all are ok)")
    backend.add_config_argument(verify)
    verify.add_argument("domain")
    verify.add_argument("--json", action="store_true", help="the check as JSON on stdout")
    verify.set_defaults(handler=run_verify)


def _name(value: str) -> str:
    try:
        return service.known_domain(value)
    except ValueError as exc:
        raise CommandFailed(f"DOMAIN: {exc}") from None


def _known(con: duckdb.DuckDBPyConnection, domain: str) -> None:
    try:
        found = store.get_domain(con, domain)
    except duckdb.CatalogException:
        raise CommandFailed("the database has no domains table yet: start the appliance once with this "
                            "version, then try again") from None
    if found is None:
        raise CommandFailed(f"no domain {domain}: `appliance domains add {domain}` adds it")


@reports_failures
def run_add(args: argparse.Namespace) -> int:
    config = backend.load(args)
    domain = _name(args.domain)

    def local(con: duckdb.DuckDBPyConnection) -> store.DomainRow:
        try:
            return service.register_domain(con, config, domain, now=utc())
        except service.DomainExists:
            raise CommandFailed(f"domain {domain} was added already") from None
        except duckdb.CatalogException:
            raise CommandFailed("the database has no domains table yet: start the appliance once with this "
                                "version, then try again") from None

    def remote(api: AdminApi) -> store.DomainRow:
        return api.post("/api/v1/domains", json={"domain": domain}, into=store.DomainRow)

    row = backend.run(config, local=local, remote=remote, write=True)
    print(f"added {row.name} (DKIM selectors {', '.join(row.selectors)}); "
          f"`appliance domains show {row.name}` prints the DNS records to publish")
    return 0


@reports_failures
def run_list(args: argparse.Namespace) -> int:
    config = backend.load(args)

    def local(con: duckdb.DuckDBPyConnection) -> list[store.DomainRow]:
        try:
            return store.list_domains(con)
        except duckdb.CatalogException:
            return []

    rows = backend.run(config, local=local,
                       remote=lambda api: api.get("/api/v1/domains", into=list[store.DomainRow]))
    for row in rows:
        print(f"{row.name}\tadded {row.added_at:%Y-%m-%d %H:%M:%S}\tselectors {', '.join(row.selectors)}")
    return 0


@reports_failures
def run_show(args: argparse.Namespace) -> int:
    config = backend.load(args)
    domain = _name(args.domain)

    def local(con: duckdb.DuckDBPyConnection) -> str:
        _known(con, domain)
        expected = asyncio.run(service.domain_manifest(config, service.dkim_keys(config), domain))
        return render(expected, args.format)

    def remote(api: AdminApi) -> str:
        return api.request("GET", f"/api/v1/domains/{domain}/manifest", params={"format": args.format}).text

    text = backend.run(config, local=local, remote=remote)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _check_locally(con: duckdb.DuckDBPyConnection, config: ApplianceConfig, domain: str) -> DomainCheck:
    _known(con, domain)

    async def check() -> DomainCheck:
        expected = await service.domain_manifest(config, service.dkim_keys(config), domain)
        return await verify_domain(expected, service.verification_resolver(config), now=utc())

    found = asyncio.run(check())
    store.record_check(con, found)
    return found


@reports_failures
def run_verify(args: argparse.Namespace) -> int:
    config = backend.load(args)
    domain = _name(args.domain)
    check = backend.run(config, local=lambda con: _check_locally(con, config, domain),
                        remote=lambda api: api.post(f"/api/v1/domains/{domain}/verify", into=DomainCheck),
                        write=True, api_timeout=60.0)
    if args.json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(check)) + b"\n")
    else:
        for record in check.records:
            line = f"{record.state:<8} {record.type:<5} {record.name}"
            print(line + (f"\n         {record.advice}" if record.advice else ""))
        bad = sum(1 for r in check.records if r.state != "ok")
        print(f"{domain}: all {len(check.records)} records ok" if check.ok
              else f"{domain}: {bad} of {len(check.records)} records not ok")
    return 0 if check.ok else 1
