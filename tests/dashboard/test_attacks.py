"""The dashboard attacked: hostile mail shown, a stranger without a session, a form pointed at files.

Each test here failed before the fix it names; what held under attack is listed in the commit that
added this file (escaping of every mail field, charts, the frame's headers, sessions, CSRF, redirects).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from appliance.dashboard.message import sanitize_html
from tests.conftest import AGENT
from tests.dashboard.app import DashboardApp, csrf_of

_SCRIPT = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
_ERROR = re.compile(r'<p class="error"[^>]*>(.*?)</p>', re.S)


def _word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def test_mail_fields_are_escaped_on_every_page_that_shows_them(dashboard: DashboardApp) -> None:
    raw = (f"From: {_word(_SCRIPT)} <evil@held.example>\r\nTo: {AGENT}\r\nSubject: {_word(_SCRIPT)}\r\n"
           "Message-ID: <m1@held.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
           "--b\r\nContent-Type: text/html\r\n\r\n<p>hi</p><base href=//evil><meta http-equiv=refresh content=0>\r\n"
           f"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"{_word(_SCRIPT)}\"\r\n"
           "\r\nxx\r\n--b--\r\n")
    dashboard.send(raw, mail_from="evil@held.example", rcpt=AGENT)
    client, _ = dashboard.login()
    (decision_id,) = dashboard.runtime.db.read_sync(
        lambda con: con.execute("SELECT decision_id FROM decisions").fetchone())
    for path in ("/ui/", "/ui/decisions", "/ui/quarantine", f"/ui/decisions/{decision_id}"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "onerror=alert" not in page.text.replace("onerror=alert(2)&gt;", "")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text or path == "/ui/", path
    frame = client.get(f"/ui/decisions/{decision_id}/html")
    assert frame.headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert frame.headers["x-content-type-options"] == "nosniff"
    assert frame.headers["content-type"] == "text/html; charset=utf-8"
    assert "<base" not in frame.text and "<meta http-equiv" not in frame.text
    assert dashboard.client().get(f"/ui/decisions/{decision_id}/html").status_code == 303  # no session, no mail


@pytest.mark.parametrize("html", ['<q cite="https://tracker.example/x">q</q>',
                                  '<ins cite="javascript:alert(1)">i</ins>',
                                  '<blockquote cite="https://tracker.example/">b</blockquote>'])
def test_no_sender_url_survives_in_a_cite_attribute(html: str) -> None:
    """Fixed in message.py: nh3 checks no scheme on ``cite``, so it kept javascript: and tracking URLs."""
    clean, _ = sanitize_html(html)
    assert "cite" not in clean and "example" not in clean and "javascript" not in clean


@pytest.mark.parametrize("field", ["since", "until"])
def test_a_time_past_the_calendar_in_utc_is_a_problem_not_a_500(dashboard: DashboardApp, field: str) -> None:
    """Fixed in decisions.py: an offset that moves year 1 or 9999 out of range raised OverflowError (500)."""
    client, _ = dashboard.login()
    value = "0001-01-01T00:00+14:00" if field == "since" else "9999-12-31T23:59-14:00"
    page = client.get("/ui/decisions", params={field: value})
    assert page.status_code == 200
    assert f"{field}: expected a date and time" in page.text


def test_pagination_and_filters_carry_no_sql(dashboard: DashboardApp) -> None:
    client, _ = dashboard.login()
    for params in ({"before": str(10**30)}, {"before": "-5"}, {"agent": "' OR 1=1 --"}, {"sender": "%"},
                   {"action": "accept' OR '1'='1"}, {"reason": "x\\"}, {"q": "\\'"}):
        assert client.get("/ui/decisions", params=params).status_code == 200, params
    assert client.get("/ui/decisions", params={"before": "abc"}).status_code == 400


def _replay_path(dashboard: DashboardApp, path: str) -> tuple[int, str]:
    client, csrf = dashboard.login()
    page = client.post("/ui/replay", data={"_csrf": csrf, "agent": AGENT, "since": "30d", "policy_path": path})
    return page.status_code, " ".join(_ERROR.findall(page.text))


def test_replay_reads_no_file_outside_the_configuration_directory(dashboard: DashboardApp, tmp_path: Path) -> None:
    """Fixed in replay.py: any .toml/.yaml/.json the appliance could read was loaded and its fields echoed."""
    outside = tmp_path.parent / f"{tmp_path.name}-secret.toml"
    outside.write_text('api_key = "TOPSECRET"\n')
    try:
        for path in (str(outside), f"../{outside.name}", "var/../../" + outside.name):
            status, error = _replay_path(dashboard, path)
            assert status == 400
            assert "outside the configuration directory" in error and "api_key" not in error, path
    finally:
        outside.unlink()


def test_replay_reads_a_policy_file_inside_the_configuration_directory(dashboard: DashboardApp) -> None:
    status, error = _replay_path(dashboard, "policy0.toml")  # the fixture's own policy, relative to base_dir
    assert (status, error) == (200, "")


def test_replay_refuses_the_data_directory_and_symlinks_leading_out(dashboard: DashboardApp, tmp_path: Path) -> None:
    (tmp_path / "var" / "keys.json").write_text('{"secret": "x"}')
    (tmp_path / "shadow.toml").symlink_to("/etc/shadow")
    for path in ("var/keys.json", str(tmp_path / "shadow.toml")):
        status, error = _replay_path(dashboard, path)
        assert status == 400 and "outside the configuration directory" in error, path


def test_login_goes_nowhere_but_a_dashboard_path(dashboard: DashboardApp) -> None:
    for target in ("//evil.example/", "/\\evil.example", "https://evil.example", "/%2fevil.example", "javascript:x"):
        client = dashboard.client()
        form = client.get("/ui/login")
        done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": "dashboard-admin-secret",
                                               "next": target})
        assert done.headers["location"] == "/ui/", target
    client = dashboard.client()
    client.cookies.set("appliance_ui", "chosen-by-attacker", domain="127.0.0.1", path="/ui")
    form = client.get("/ui/login")
    done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": "dashboard-admin-secret"})
    assert "chosen-by-attacker" not in done.headers["set-cookie"]  # a new session id at login: no fixation


def test_static_files_do_not_leave_their_folder(dashboard: DashboardApp) -> None:
    client = dashboard.client()
    assert client.get("/ui/static/dashboard.css").status_code == 200
    for path in ("/ui/static/..%2fpages.py", "/ui/static/%2e%2e/pages.py", "/ui/static/..%5cpages.py",
                 "/ui/static/%2e%2e%2f%2e%2e%2fconfig.py"):
        response = client.get(path)
        assert response.status_code == 404 and "import" not in response.text, path


def test_what_litestar_answers_itself_under_ui_carries_the_security_headers(dashboard: DashboardApp) -> None:
    client, _ = dashboard.login()
    for method, path, status in (("GET", "/ui/no-such-page/at/all", 404), ("GET", "/ui/logout", 405),
                                 ("PUT", "/ui/", 405)):
        answer = client.request(method, path)
        assert answer.status_code == status, (method, path)
        assert answer.headers.get("content-security-policy", "").startswith("default-src 'self'"), (method, path)
        assert answer.headers.get("x-frame-options") == "DENY" and answer.headers.get("cache-control") == "no-store"
    api = client.get("/api/v1/no-such-thing")  # outside /ui: the API's answers are not the dashboard's
    assert api.status_code in (401, 404) and "x-frame-options" not in api.headers
