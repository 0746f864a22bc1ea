"""Domains over HTTP on a real app (admin only), and the MTA-STS policy chosen by the Host header."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import dns.zone
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.domains.keys import DkimPublicKey
from appliance.domains.mta_sts import MAX_AGE
from tests.dnsserver import DnsTestServer, Record
from tests.domains.conftest import ADDRESS, DOMAIN, MX

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    config = make_config(domains={"public_address": ADDRESS, "mta_sts_mode": "enforce"})
    async with AsyncTestClient(app=create_app(config)) as test_client:
        yield test_client


async def test_add_list_show_and_conflict(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    added = await client.post("/api/v1/domains", json={"domain": "Example.Test"}, headers=ADMIN)
    assert added.status_code == 201
    assert added.json()["name"] == DOMAIN and added.json()["selectors"] == ["appliance-rsa", "appliance-ed25519"]
    again = await client.post("/api/v1/domains", json={"domain": DOMAIN}, headers=ADMIN)
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    listed = (await client.get("/api/v1/domains", headers=ADMIN)).json()
    assert [d["name"] for d in listed] == [DOMAIN]
    shown = (await client.get(f"/api/v1/domains/{DOMAIN}", headers=ADMIN)).json()
    assert shown["name"] == DOMAIN and shown["lastCheck"] is None and "addedAt" in shown
    assert (await client.get("/api/v1/domains/other.test", headers=ADMIN)).status_code == 404


async def test_a_bad_name_is_a_problem_naming_the_value(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    bad = await client.post("/api/v1/domains", json={"domain": "not a domain"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["status"] == 400 and "'not a domain'" in bad.json()["detail"]


async def test_domains_are_admin_only(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/api/v1/domains")).status_code == 401
    assert (await client.post("/api/v1/domains", json={"domain": DOMAIN})).status_code == 401
    assert (await client.get(f"/api/v1/domains/{DOMAIN}/manifest",
                             headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_the_manifest_in_three_formats(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    await client.post("/api/v1/domains", json={"domain": DOMAIN}, headers=ADMIN)
    as_json = (await client.get(f"/api/v1/domains/{DOMAIN}/manifest", headers=ADMIN)).json()
    assert as_json["domain"] == DOMAIN
    assert {"name": DOMAIN, "type": "MX", "value": f"10 {MX}"}.items() <= as_json["records"][0].items()
    bind = await client.get(f"/api/v1/domains/{DOMAIN}/manifest", params={"format": "bind"}, headers=ADMIN)
    assert bind.headers["content-type"].startswith("text/plain")
    zone = dns.zone.from_text(bind.text, origin=DOMAIN, check_origin=False)
    assert len(list(zone.iterate_rdatas())) == len(as_json["records"])
    table = await client.get(f"/api/v1/domains/{DOMAIN}/manifest", params={"format": "table"}, headers=ADMIN)
    assert table.text.splitlines()[2].startswith("TYPE") and f"_dmarc.{DOMAIN}." in table.text
    wrong = await client.get(f"/api/v1/domains/{DOMAIN}/manifest", params={"format": "yaml"}, headers=ADMIN)
    assert wrong.status_code == 400 and "'yaml'" in wrong.json()["detail"]


async def test_verify_records_and_the_history_lists_newest_first(
        client: AsyncTestClient, dns_server: DnsTestServer) -> None:  # type: ignore[type-arg]
    await client.post("/api/v1/domains", json={"domain": DOMAIN}, headers=ADMIN)
    first = await client.post(f"/api/v1/domains/{DOMAIN}/verify", headers=ADMIN)
    assert first.status_code == 200 and first.json()["ok"] is False
    manifest = (await client.get(f"/api/v1/domains/{DOMAIN}/manifest", headers=ADMIN)).json()
    for r in manifest["records"]:
        dns_server.add(Record(r["name"], r["type"], r["value"]))
    for p in manifest["ptr"]:
        dns_server.add(Record(p["name"], "PTR", p["target"]))
    second = (await client.post(f"/api/v1/domains/{DOMAIN}/verify", headers=ADMIN)).json()
    assert second["ok"] is True and {r["state"] for r in second["records"]} == {"ok"}
    history = (await client.get(f"/api/v1/domains/{DOMAIN}/checks", headers=ADMIN)).json()
    assert [c["ok"] for c in history] == [True, False]
    assert (await client.get(f"/api/v1/domains/{DOMAIN}/checks", params={"limit": 1},
                             headers=ADMIN)).json() == [second]
    too_many = await client.get(f"/api/v1/domains/{DOMAIN}/checks", params={"limit": 1000}, headers=ADMIN)
    assert too_many.status_code == 400
    shown = (await client.get(f"/api/v1/domains/{DOMAIN}", headers=ADMIN)).json()
    assert shown["lastCheck"] == second


async def test_mta_sts_policy_by_host(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    await client.post("/api/v1/domains", json={"domain": DOMAIN}, headers=ADMIN)
    served = await client.get("/.well-known/mta-sts.txt", headers={"Host": f"mta-sts.{DOMAIN}:443"})
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
    assert served.text == f"version: STSv1\r\nmode: enforce\r\nmx: {MX}\r\nmax_age: {MAX_AGE}\r\n"
    assert (await client.get("/.well-known/mta-sts.txt", headers={"Host": "mta-sts.other.test"})).status_code == 404
    assert (await client.get("/.well-known/mta-sts.txt", headers={"Host": DOMAIN})).status_code == 404
    same = await client.get("/.well-known/mta-sts.txt", headers={"Host": f"MTA-STS.{DOMAIN.upper()}."})
    assert same.status_code == 200 and same.text == served.text
    assert (await client.get("/.well-known/mta-sts.txt", headers={"Host": "[::1]:443"})).status_code == 404


class StalwartLikeKeys:
    """A ``DkimKeys`` other than the appliance's own, as the mode may set on the runtime."""

    async def public_keys(self, domain: str) -> list[DkimPublicKey]:
        return [DkimPublicKey(selector="202612e", kind="ed25519", p="MCowBQYDK2VwAyEA")]


async def test_the_manifest_publishes_the_keys_the_mode_names(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    await client.post("/api/v1/domains", json={"domain": DOMAIN}, headers=ADMIN)
    client.app.state.runtime.dkim_keys = StalwartLikeKeys()
    records = (await client.get(f"/api/v1/domains/{DOMAIN}/manifest", headers=ADMIN)).json()["records"]
    assert [r["name"] for r in records if r["purpose"] == "dkim"] == [f"202612e._domainkey.{DOMAIN}"]
