"""The Decisions pages over mail put in by the real pipeline (SMTP, gate, audit, store, delivery jobs)."""

from __future__ import annotations

import re

import pytest

from appliance.dashboard.headers import MESSAGE_CSP
from tests.conftest import AGENT, OTHER_AGENT
from tests.dashboard.app import DashboardApp

_ROW = re.compile(r'<tr class="decision" data-decision-id="([^"]+)" data-seq="(\d+)">')


def plain(sender: str, subject: str, n: int) -> str:
    message_id = f"<m{n}.{subject.replace(' ', '-')}@x>"
    return f"From: {sender}\r\nTo: {AGENT}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\nbody {n}\r\n"


def listed(html: str) -> list[str]:
    """The decision ids a list page shows, in order."""
    return [m.group(1) for m in _ROW.finditer(html)]


def decision_ids(app: DashboardApp, where: str = "TRUE", args: list[object] | None = None) -> list[str]:
    """Decision ids straight from the audit table, newest first (what the page should show)."""
    rows = app.runtime.db.read_sync(lambda con: con.execute(
        f"SELECT decision_id FROM decisions WHERE {where} ORDER BY seq DESC", args or []).fetchall())
    return [r[0] for r in rows]


@pytest.fixture
def seeded(dashboard: DashboardApp) -> DashboardApp:
    """Accepted, bounced (a stranger, and a subdomain of an allowed domain), quarantined and dropped mail."""
    codes = dashboard.send_all([
        (plain("alice@example.net", "Invoice 42", 1), "alice@example.net", AGENT),
        (plain("bob@sub.example.net", "Lunch plans", 2), "bob@sub.example.net", AGENT),
        (plain("alice@example.net", "Second invoice", 3), "alice@example.net", OTHER_AGENT),
        (plain("mallory@stranger.example", "Win big", 4), "mallory@stranger.example", AGENT),
        (plain("h@held.example", "Held one", 5), "h@held.example", AGENT),
        (plain("d@dropped.example", "Dropped one", 6), "d@dropped.example", AGENT),
    ])
    assert codes == [250, 550, 250, 550, 250, 250]  # example.net's rule does not cover its subdomains
    return dashboard


@pytest.mark.parametrize(("params", "where", "args"), [
    ({}, "TRUE", []),
    ({"agent": OTHER_AGENT}, "agent = ?", [OTHER_AGENT]),
    ({"action": "bounce"}, "action = 'bounce'", []),
    ({"action": "accept", "agent": AGENT}, "action = 'accept' AND agent = ?", [AGENT]),
    ({"reason": "quarantined_by_rule"}, "reason = 'quarantined_by_rule'", []),
    ({"sender": "ALICE@example.net"}, "header_from = 'alice@example.net'", []),
    ({"sender": "example.net"}, "header_from LIKE '%example.net'", []),  # the domain and its subdomains
    ({"sender": "sub.example.net"}, "header_from = 'bob@sub.example.net'", []),
    ({"q": "invoice"}, "subject ILIKE '%invoice%'", []),
    ({"q": "100%"}, "FALSE", []),  # % is a character here, not a wildcard
    ({"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"}, "FALSE", []),
    ({"since": "2000-01-01T00:00"}, "TRUE", []),
])
def test_filters_return_exactly_the_matching_rows(seeded: DashboardApp, params: dict[str, str], where: str,
                                                  args: list[object]) -> None:
    client, _ = seeded.login()
    page = client.get("/ui/decisions", params=params)
    assert page.status_code == 200, page.text
    expected = decision_ids(seeded, where, args)
    assert listed(page.text) == expected
    if not expected:
        assert 'id="no-decisions"' in page.text


def test_a_time_the_form_cannot_read_is_said_not_guessed(seeded: DashboardApp) -> None:
    client, _ = seeded.login()
    page = client.get("/ui/decisions", params={"since": "yesterday"})
    assert page.status_code == 200
    assert "since: expected a date and time" in page.text and listed(page.text) == []


def test_pages_go_back_in_time_without_gaps_or_repeats(dashboard: DashboardApp) -> None:
    codes = dashboard.send_all([(plain("p@example.net", f"page {n}", n), "p@example.net", AGENT) for n in range(57)])
    assert set(codes) == {250}
    client, _ = dashboard.login()
    first = client.get("/ui/decisions", params={"agent": AGENT}).text
    assert len(listed(first)) == 50
    older = re.search(r'<a class="next-page" href="([^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert 'class="next-page"' not in second
    assert listed(first) + listed(second) == decision_ids(dashboard, "agent = ?", [AGENT])


def test_a_decision_page_shows_trace_auth_capabilities_and_deliveries(seeded: DashboardApp) -> None:
    client, _ = seeded.login()
    accepted = decision_ids(seeded, "subject = 'Invoice 42'")[0]
    page = client.get(f"/ui/decisions/{accepted}")
    assert page.status_code == 200, page.text
    steps = re.findall(r'<tr class="trace-step" data-step="([a-z]+)"><td>[a-z]+</td><td>([^<]*)</td>', page.text)
    assert steps == [("parse", "pass"), ("sender", "match"), ("verification", "pass"), ("content", "pass"),
                     ("loop", "pass"), ("rate", "pass"), ("budget", "pass"), ("decision", "accept")]
    assert '<li class="capability">read</li>' in page.text
    assert 'id="auth-spf"' in page.text and "body 1" in page.text
    delivery = seeded.runtime.db.read_sync(lambda con: con.execute(
        "SELECT delivery_id FROM deliveries WHERE decision_id = ?", [accepted]).fetchall())
    assert delivery and all(f'data-delivery-id="{d[0]}"' in page.text for d in delivery)

    bounced = decision_ids(seeded, "action = 'bounce'")[0]
    page = client.get(f"/ui/decisions/{bounced}").text
    steps = re.findall(r'data-step="([a-z]+)"><td>[a-z]+</td><td>([^<]*)</td>', page)
    assert steps == [("parse", "pass"), ("sender", "no match"), ("decision", "bounce")]
    assert "sender_not_allowed" in page
    # a refused message's bytes are kept for [retention] refused_raw_days (7 here): shown, made safe
    assert 'id="message-missing"' not in page and "body 4" in page and "none: refused" in page
    frame = client.get(f"/ui/decisions/{bounced}/html")
    assert frame.status_code == 200 and frame.headers["content-security-policy"].startswith("sandbox")

    assert client.get("/ui/decisions/no-such-decision").status_code == 404


HOSTILE_HTML = """<html><head><style>p{background:url(http://evil.example/css)}</style>
<script>document.title='pwned'</script></head>
<body onload="alert(1)"><p onclick="alert(2)" style="color: red; background-image: url(http://evil.example/bg)">Hello
<a href="javascript:alert(3)">click</a> <a href="https://evil.example/track">site</a></p>
<img src="http://evil.example/pixel.gif" onerror="alert(4)"><img src="data:image/png;base64,iVBORw0KGgo=" alt="ok">
<svg onload="alert(5)"><script>alert(6)</script></svg><iframe src="https://evil.example/"></iframe>
<form action="https://evil.example/"><input name="x"></form></body></html>"""


def hostile_message() -> str:
    return ("From: Alice <alice@example.net>\r\nTo: agent@example.test\r\nSubject: Newsletter\r\n"
            "Message-ID: <hostile@example.net>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
            "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
            "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello in plain text\r\n"
            f"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{HOSTILE_HTML}\r\n--inner--\r\n"
            "--outer\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
            "Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "JVBERi0xLjQKJcfsj6IK\r\n--outer--\r\n")


def test_a_message_with_script_runs_none_of_it(dashboard: DashboardApp) -> None:
    dashboard.send(hostile_message(), mail_from="alice@example.net", rcpt=AGENT)
    client, _ = dashboard.login()
    decision = decision_ids(dashboard, "subject = 'Newsletter'")[0]
    page = client.get(f"/ui/decisions/{decision}")
    assert page.status_code == 200
    frame = re.search(r'<iframe id="message-html"[^>]*>', page.text)
    assert frame is not None
    assert ' sandbox ' in frame.group(0) and "allow-" not in frame.group(0)  # no script, no same origin
    assert f'src="/ui/decisions/{decision}/html"' in frame.group(0)
    assert "<script" not in page.text and "evil.example" not in page.text
    assert "Hello in plain text" in page.text
    assert re.search(r'<td>report\.pdf</td><td class="mono">application/pdf</td><td class="num">15</td>', page.text)
    assert re.search(r'id="remote-blocked">1<', page.text)

    html = client.get(f"/ui/decisions/{decision}/html")
    assert html.status_code == 200
    assert html.headers["content-security-policy"] == MESSAGE_CSP
    assert html.headers["x-frame-options"] == "SAMEORIGIN"
    body = html.text.lower()
    for forbidden in ("<script", "onload", "onclick", "onerror", "javascript:", "evil.example", "<iframe", "<form",
                      "<style", "url(", "<svg"):
        assert forbidden not in body, forbidden
    assert "hello" in body and 'src="data:image/png;base64,ivborw0kggo="' in body
    assert "style=" not in body  # the style held a url(): dropped whole, not trimmed


def test_the_message_frame_needs_the_session_too(seeded: DashboardApp) -> None:
    decision = decision_ids(seeded, "subject = 'Invoice 42'")[0]
    stranger = seeded.client()
    assert stranger.get(f"/ui/decisions/{decision}/html").status_code == 303
