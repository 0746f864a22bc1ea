"""Checks are recorded: a domain's history across two checks, newest first, through the real store."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from appliance.config import ApplianceConfig
from appliance.domains import service
from appliance.mailauth.dns import DnsResolver
from appliance.store import domains as store
from appliance.store.database import Database
from tests.dnsserver import DnsTestServer, Record
from tests.domains.conftest import ADDRESS, DOMAIN


@pytest.fixture
def config(make_config: Callable[..., ApplianceConfig]) -> ApplianceConfig:
    return make_config(domains={"public_address": ADDRESS})


@pytest.fixture
def db(config: ApplianceConfig) -> Iterator[Database]:
    database = Database(config.data_path / "appliance.duckdb")
    yield database
    database.close()


async def publish_all(server: DnsTestServer, config: ApplianceConfig) -> None:
    expected = await service.domain_manifest(config, service.dkim_keys(config), DOMAIN)
    for r in expected.records:
        server.add(Record(r.name, r.type, r.value))
    for p in expected.ptr:
        server.add(Record(p.name, "PTR", p.target))


async def test_adding_makes_the_keys_and_the_row_once(db: Database, config: ApplianceConfig) -> None:
    row = await service.add_domain(db, config, "Example.TEST")
    assert row.name == DOMAIN and row.selectors == ("appliance-rsa", "appliance-ed25519")
    assert sorted(p.name for p in (config.data_path / "dkim" / DOMAIN).iterdir()) == [
        "appliance-ed25519.pem", "appliance-rsa.pem"]
    keys = await service.dkim_keys(config).public_keys(DOMAIN)
    assert [k.kind for k in keys] == ["rsa", "ed25519"]
    with pytest.raises(service.DomainExists):
        await service.add_domain(db, config, DOMAIN)
    with pytest.raises(ValueError, match="'bad_name!'"):
        await service.add_domain(db, config, "bad_name!")
    assert [r.name for r in await db.read(store.list_domains)] == [DOMAIN]


async def test_two_checks_are_kept_newest_first(db: Database, config: ApplianceConfig,
                                                dns_server: DnsTestServer) -> None:
    await service.add_domain(db, config, DOMAIN)
    resolver = DnsResolver([dns_server.address], timeout=0.5)
    first = await service.check_now(db, config, DOMAIN, resolver=resolver)
    assert not first.ok and {r.state for r in first.records} == {"missing"}
    await publish_all(dns_server, config)
    second = await service.check_now(db, config, DOMAIN, resolver=DnsResolver([dns_server.address], timeout=0.5))
    assert second.ok
    history = await db.read(lambda con: store.check_history(con, DOMAIN, limit=10))
    assert history == [second, first]
    assert await db.read(lambda con: store.check_history(con, DOMAIN, limit=1)) == [second]


async def test_poll_checks_every_domain_and_records_it(db: Database, config: ApplianceConfig,
                                                       dns_server: DnsTestServer) -> None:
    await service.add_domain(db, config, DOMAIN)
    await service.add_domain(db, config, "second.test")
    await publish_all(dns_server, config)
    checks = await service.poll_domains(db, config)  # the configured resolver: the loopback server
    assert [(c.domain, c.ok) for c in checks] == [("example.test", True), ("second.test", False)]
    assert len(await db.read(lambda con: store.check_history(con, "second.test", limit=5))) == 1
    with pytest.raises(service.UnknownDomain):
        await service.check_now(db, config, "never-added.test")
