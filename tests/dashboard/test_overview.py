"""The Overview page: its chart drawn from the decisions the pipeline recorded, its cards from the store."""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable

import pytest
from defusedxml.ElementTree import fromstring

from appliance.config import ApplianceConfig
from tests.conftest import AGENT, OTHER_AGENT
from tests.dashboard.app import ADMIN_TOKEN, DashboardApp, serve_dashboard

SVG = "{http://www.w3.org/2000/svg}"


def chart_of(html: str, chart_id: str) -> ET.Element:
    found = re.search(rf'<svg [^>]*data-chart="{chart_id}".*?</svg>', html, re.DOTALL)
    assert found is not None, f"no chart {chart_id}"
    return fromstring(found.group(0))


def bars(svg: ET.Element) -> Counter[tuple[str, str]]:
    """(series name, x label) -> the value each bar of the chart says it stands for."""
    legend = [t.text or "" for t in svg.iterfind(f".//{SVG}g[@class='legends']//{SVG}text")]
    drawn: Counter[tuple[str, str]] = Counter()
    plot = next(g for g in svg.iter(f"{SVG}g") if (g.get("class") or "").split() == ["plot"])
    for series in plot.iter(f"{SVG}g"):
        classes = (series.get("class") or "").split()
        if "series" not in classes:
            continue
        index = int(next(c for c in classes if c.startswith("serie-")).removeprefix("serie-"))
        for bar in series.iter(f"{SVG}g"):
            descs = {d.get("class"): d.text for d in bar.findall(f"{SVG}desc")}
            if "value" in descs:
                drawn[(legend[index], descs["x_label"] or "")] += int(float(descs["value"] or 0))
    return drawn


def plain(sender: str, n: int) -> str:
    return f"From: {sender}\r\nTo: {AGENT}\r\nSubject: s{n}\r\nMessage-ID: <o{n}@x>\r\n\r\nbody\r\n"


def test_the_chart_bars_are_the_recorded_decisions_per_hour_and_action(dashboard: DashboardApp) -> None:
    mail = ([(plain("a@example.net", n), "a@example.net", AGENT) for n in range(5)]
            + [(plain("z@stranger.example", 10 + n), "z@stranger.example", OTHER_AGENT) for n in range(3)]
            + [(plain("h@held.example", 20 + n), "h@held.example", AGENT) for n in range(2)])
    assert dashboard.send_all(mail) == [250] * 5 + [550] * 3 + [250] * 2
    recorded = dashboard.runtime.db.read_sync(lambda con: con.execute(
        "SELECT action, strftime(date_trunc('hour', ts), '%H:00'), count(*) FROM decisions GROUP BY ALL").fetchall())
    client, _ = dashboard.login()
    page = client.get("/ui/")
    assert page.status_code == 200, page.text
    drawn = bars(chart_of(page.text, "chart-decisions-per-hour"))
    assert drawn == Counter({(action, hour): n for action, hour, n in recorded})
    assert sum(drawn.values()) == 10
    assert re.search(r'id="decisions-total">10<', page.text)
    # the stylesheet inside the chart is the one inline style the page's CSP allows
    svg = chart_of(page.text, "chart-decisions-per-hour")
    style = next(svg.iter(f"{SVG}style")).text or ""
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in page.headers["content-security-policy"]
    assert svg.find(f".//{SVG}script") is None


def test_senders_refusals_and_delivery_health_are_counted(dashboard: DashboardApp) -> None:
    mail = ([(plain("a@example.net", n), "a@example.net", AGENT) for n in range(3)]
            + [(plain("z@stranger.example", 10 + n), "z@stranger.example", AGENT) for n in range(2)])
    dashboard.send_all(mail)
    client, _ = dashboard.login()
    page = client.get("/ui/").text
    senders = re.findall(r'<tr class="sender"><td><a [^>]*>([^<]+)</a></td><td class="num">(\d+)</td>', page)
    assert senders == [("a@example.net", "3"), ("z@stranger.example", "2")]
    refusals = re.findall(r'<tr class="refusal"><td><a [^>]*>([^<]+)</a></td><td class="num">(\d+)</td>', page)
    assert refusals == [("sender_not_allowed", "2")]
    statuses = dashboard.runtime.db.read_sync(lambda con: con.execute(
        "SELECT status, count(*) FROM deliveries GROUP BY ALL").fetchall())
    shown = dict(re.findall(r'data-status="([a-z_]+)">.*?<td class="num">(\d+)</td>', page))
    assert shown == {status: str(n) for status, n in statuses} and sum(n for _, n in statuses) >= 3
    assert 'id="part-appliance">ready<' in page


BUDGET_POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
tokenBudget = { perThread = 5000, perDay = 20000 }
"""


def test_token_spend_is_shown_against_the_budgets_that_apply(make_config: Callable[..., ApplianceConfig],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", ADMIN_TOKEN)
    with serve_dashboard(make_config(mode="sandbox", policies={AGENT: BUDGET_POLICY})) as app:
        app.send_all([(plain("a@example.net", n), "a@example.net", AGENT) for n in range(2)])
        spent = dict(app.runtime.db.read_sync(lambda con: con.execute(
            "SELECT split_part(key, '|', 1), sum(tokens) FROM limit_events GROUP BY 1").fetchall()))
        assert spent["thread"] > 0 and spent["day"] == spent["thread"]
        client, _ = app.login()
        page = client.get("/ui/").text
    days = re.findall(r'<tr class="spend-day"><td>([^<]+)</td><td>([^<]+)</td><td class="num">(\d+)</td>'
                      r'<td class="num">(\d+)</td>', page)
    assert days == [(AGENT, "example.net", str(spent["day"]), "20000")]
    threads = re.findall(r'<tr class="spend-thread"><td>[^<]+</td><td class="mono">[^<]+</td><td class="num">(\d+)</td>'
                         r'<td class="num">(\d+)</td>', page)
    assert len(threads) == 2 and {b for _, b in threads} == {"5000"}
    assert sum(int(t) for t, _ in threads) == spent["thread"]
    assert page.count('<meter min="0" max="5000"') == 2
