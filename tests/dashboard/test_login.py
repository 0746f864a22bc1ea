"""Logging in and out of the dashboard, and the door every page sits behind."""

from __future__ import annotations

import pytest

from appliance.dashboard.pages import NAV
from tests.dashboard.app import ADMIN_TOKEN, DashboardApp, csrf_of

PAGES = ["/ui/"]
"""The pages this module serves (the others' tests cover theirs)."""


def test_a_wrong_token_is_refused_and_sets_no_session(dashboard: DashboardApp) -> None:
    client = dashboard.client()
    form = client.get("/ui/login")
    refused = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": "not-the-token"})
    assert refused.status_code == 401
    assert "not the admin token" in refused.text
    assert "appliance_ui" not in refused.cookies
    assert client.get("/ui/").status_code == 303


def test_the_right_token_sets_an_httponly_samesite_strict_cookie(dashboard: DashboardApp) -> None:
    client = dashboard.client()
    form = client.get("/ui/login")
    done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": ADMIN_TOKEN,
                                          "next": "/ui/decisions"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/decisions"
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("appliance_ui="))
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    assert "secure" not in attributes  # plain HTTP on loopback, and no https public_url
    assert client.get("/ui/").status_code == 200


def test_login_goes_back_only_to_dashboard_pages(dashboard: DashboardApp) -> None:
    client = dashboard.client()
    form = client.get("/ui/login")
    done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": ADMIN_TOKEN,
                                          "next": "//evil.example/ui/"})
    assert done.headers["location"] == "/ui/"


def test_the_login_form_without_its_csrf_value_is_403(dashboard: DashboardApp) -> None:
    client = dashboard.client()
    client.get("/ui/login")  # the double-submit cookie is set, but the form omits the value
    assert client.post("/ui/login", data={"token": ADMIN_TOKEN}).status_code == 403
    assert client.post("/ui/login", data={"_csrf": "forged", "token": ADMIN_TOKEN}).status_code == 403
    stranger = dashboard.client()
    if True:  # no cookie at all: a cross-site form post
        assert stranger.post("/ui/login", data={"_csrf": "x", "token": ADMIN_TOKEN}).status_code == 403


@pytest.mark.parametrize("path", [*PAGES, *(entry.path for entry in NAV), "/ui/decisions/d-unknown"])
def test_every_page_sends_a_stranger_to_the_login_page(dashboard: DashboardApp, path: str) -> None:
    client = dashboard.client()
    response = client.get(path)
    if response.status_code == 404:  # a page another part of the dashboard has not mounted yet
        return
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=")
    assert "content-security-policy" in response.headers


def test_the_admin_bearer_token_is_not_a_session(dashboard: DashboardApp) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = dashboard.client()
    assert client.get("/ui/", headers=bearer).status_code == 303
    assert client.post("/ui/logout", headers=bearer, data={"_csrf": "x"}).status_code == 401


def test_a_post_without_or_with_a_wrong_csrf_token_is_403(dashboard: DashboardApp) -> None:
    client, csrf = dashboard.login()
    refused = client.post("/ui/logout", data={})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html") and "CSRF token missing or wrong" in refused.text
    assert "content-security-policy" in refused.headers
    assert client.post("/ui/logout", data={"_csrf": csrf + "x"}).status_code == 403
    assert client.post("/ui/logout", headers={"x-csrf-token": "wrong"}, data={"_csrf": csrf}).status_code == 403
    assert client.get("/ui/").status_code == 200  # still logged in: nothing was done


def test_the_csrf_token_of_another_session_is_refused(dashboard: DashboardApp) -> None:
    _, first_csrf = dashboard.login()
    second, _ = dashboard.login()
    assert second.post("/ui/logout", data={"_csrf": first_csrf}).status_code == 403


def test_logout_ends_the_session_for_good(dashboard: DashboardApp) -> None:
    client, csrf = dashboard.login()
    cookie = client.cookies["appliance_ui"]
    out = client.post("/ui/logout", data={"_csrf": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    replay = dashboard.client()
    if True:  # the same cookie, presented again
        replay.cookies.set("appliance_ui", cookie, domain="127.0.0.1", path="/ui")
        assert replay.get("/ui/").status_code == 303
        assert replay.post("/ui/logout", data={"_csrf": csrf}).status_code == 401


@pytest.mark.parametrize("path", ["/ui/login", *PAGES, "/ui/static/dashboard.css"])
def test_every_page_carries_a_strict_csp(dashboard: DashboardApp, path: str) -> None:
    client, _ = dashboard.login()
    response = client.get(path)
    assert response.status_code == 200, response.text
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert "'unsafe-inline'" not in csp and "http" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    if response.headers["content-type"].startswith("text/html"):
        assert "<script" not in response.text
