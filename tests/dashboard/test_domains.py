"""The Domains page: the DNS manifest of each domain, each record's state after a check, and the fix."""

from __future__ import annotations

import re

import httpx

from tests.dashboard.app import ADMIN_TOKEN, DashboardApp


def add_domain(dashboard: DashboardApp, name: str) -> None:
    added = httpx.post(f"{dashboard.url}/api/v1/domains", json={"domain": name},
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    assert added.status_code == 201, added.text


def states(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr class="record" data-type="([^"]+)" data-purpose="[^"]+" data-state="([^"]+)"', html)


def test_a_domain_shows_its_records_unchecked_then_missing_with_the_fix_after_check_now(
        dashboard: DashboardApp) -> None:
    add_domain(dashboard, "example.test")
    client, csrf = dashboard.login()
    listing = client.get("/ui/domains")
    assert listing.status_code == 200 and 'data-domain="example.test"' in listing.text
    assert "not checked yet" in listing.text
    before = client.get("/ui/domains/example.test")
    assert before.status_code == 200
    found = states(before.text)
    assert {"MX", "TXT"} <= {t for t, _ in found} and {s for _, s in found} == {"unchecked"}
    assert "v=DMARC1" in before.text and "_dmarc.example.test" in before.text
    checked = client.post("/ui/domains/example.test/verify", data={"_csrf": csrf})
    assert checked.status_code == 303 and checked.headers["location"] == "/ui/domains/example.test"
    after = client.get("/ui/domains/example.test")
    assert {s for _, s in states(after.text)} == {"missing"}  # the test DNS server knows no name
    fixes = [re.sub(r"<wbr>", "", fix) for fix in re.findall(r'<td class="fix">(.*?)</td>', after.text)]
    assert len(fixes) == len(states(after.text)) and all(fix.startswith(("add", "publish", "ask")) for fix in fixes)
    assert "Some records need fixing" in after.text
    assert "record(s) to fix" in client.get("/ui/domains").text


def test_an_unknown_domain_is_404(dashboard: DashboardApp) -> None:
    client, _ = dashboard.login()
    assert client.get("/ui/domains/nowhere.test").status_code == 404
    assert client.get("/ui/domains/not a domain").status_code == 404
