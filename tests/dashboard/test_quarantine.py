"""The Quarantine page: held mail listed and read safely; release and delete audited with the session."""

from __future__ import annotations

import re

from appliance.store.messages import INBOX
from tests.conftest import AGENT
from tests.dashboard.app import DashboardApp
from tests.dashboard.audit_log import events, sql

HOSTILE_HTML = ('<p>Invoice attached</p><script>document.title="pwned"</script>'
                '<img src="x" onerror="alert(1)"><a href="javascript:alert(2)">pay</a>')


def held_message(n: int, *, html: str | None = None) -> str:
    head = f"From: h{n}@held.example\r\nTo: {AGENT}\r\nSubject: held {n}\r\nMessage-ID: <held-{n}@x>\r\n"
    if html is None:
        return head + "\r\nplease review\r\n"
    return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nplease review\r\n"
            f"--b\r\nContent-Type: text/html\r\n\r\n{html}\r\n--b--\r\n")


def hold(dashboard: DashboardApp, n: int, *, html: str | None = None) -> None:
    dashboard.send(held_message(n, html=html), mail_from=f"h{n}@held.example", rcpt=AGENT)


def held_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="held" data-email-id="([^"]+)"', html)


def test_the_list_shows_every_held_message_newest_first_with_its_sender(dashboard: DashboardApp) -> None:
    hold(dashboard, 1)
    hold(dashboard, 2)
    client, _ = dashboard.login()
    listing = client.get("/ui/quarantine")
    assert listing.status_code == 200
    assert len(held_ids(listing.text)) == 2
    assert listing.text.index("held 2") < listing.text.index("held 1")
    assert "h1@held.example" in listing.text and "2 held" in listing.text


def test_a_held_message_is_read_with_its_reason_and_its_html_only_in_the_sandboxed_frame(
        dashboard: DashboardApp) -> None:
    hold(dashboard, 1, html=HOSTILE_HTML)
    client, _ = dashboard.login()
    email_id = held_ids(client.get("/ui/quarantine").text)[0]
    shown = client.get(f"/ui/quarantine/{email_id}")
    assert shown.status_code == 200
    assert "quarantined_by_rule" in shown.text and "please review" in shown.text
    assert "<script" not in shown.text and "onerror" not in shown.text and "javascript:" not in shown.text
    frame = re.search(r'<iframe[^>]*id="message-html"[^>]*>', shown.text)
    assert frame is not None and 'sandbox=""' in frame.group(0)
    src = re.search(r'src="([^"]+)"', frame.group(0))
    assert src is not None
    body = client.get(src.group(1).replace("&amp;", "&"))
    assert body.status_code == 200 and "Invoice attached" in body.text
    assert "<script" not in body.text and "onerror" not in body.text and "javascript:" not in body.text
    assert body.headers["content-security-policy"].startswith("sandbox")


def test_release_moves_it_to_the_inbox_and_audits_the_dashboard_session(dashboard: DashboardApp) -> None:
    hold(dashboard, 1)
    client, csrf = dashboard.login()
    email_id = held_ids(client.get("/ui/quarantine").text)[0]
    released = client.post(f"/ui/quarantine/{email_id}/release", data={"_csrf": csrf})
    assert released.status_code == 303
    back = client.get(released.headers["location"])
    assert f"Released {email_id}" in back.text and held_ids(back.text) == []
    audited = events(dashboard, "quarantine.released")
    assert len(audited) == 1 and audited[0][0] == AGENT
    assert re.search(rf"{email_id} released by admin via dashboard session [0-9a-f]{{8}} \(logged in ", audited[0][1])
    assert sql(dashboard, f"SELECT mailbox FROM messages WHERE email_id = '{email_id}'") == [[INBOX]]


def test_delete_removes_it_and_audits_the_session_and_a_second_click_says_it_is_gone(
        dashboard: DashboardApp) -> None:
    hold(dashboard, 1)
    client, csrf = dashboard.login()
    email_id = held_ids(client.get("/ui/quarantine").text)[0]
    assert client.post(f"/ui/quarantine/{email_id}/delete", data={"_csrf": csrf}).status_code == 303
    again = client.post(f"/ui/quarantine/{email_id}/delete", data={"_csrf": csrf})
    assert "is not in quarantine" in client.get(again.headers["location"]).text
    audited = events(dashboard, "quarantine.deleted")
    assert len(audited) == 1 and "deleted by admin via dashboard session" in audited[0][1]
    assert client.get(f"/ui/quarantine/{email_id}").status_code == 404


def test_release_without_the_csrf_token_is_refused_and_changes_nothing(dashboard: DashboardApp) -> None:
    hold(dashboard, 1)
    client, _ = dashboard.login()
    email_id = held_ids(client.get("/ui/quarantine").text)[0]
    assert client.post(f"/ui/quarantine/{email_id}/release", data={}).status_code == 403
    assert held_ids(client.get("/ui/quarantine").text) == [email_id]
    assert events(dashboard, "quarantine.released") == []
