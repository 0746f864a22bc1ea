"""Dashboard sessions: they expire, logout forgets them, and their cookie is Secure when the site is HTTPS."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance.config import ApplianceConfig
from appliance.dashboard.session import MAX_SESSIONS, SessionBook
from tests.dashboard.app import ADMIN_TOKEN, csrf_of, serve_dashboard


def test_a_session_is_found_until_it_expires() -> None:
    book = SessionBook(lifetime=3600)
    session_id, session = book.open(now=1000.0)
    assert book.find(session_id, now=4599.0) == session
    assert book.find(session_id, now=4600.0) is None
    assert book.find(session_id, now=1000.0) is None  # expired sessions are forgotten, not revived


def test_ended_unknown_and_empty_ids_find_nothing() -> None:
    book = SessionBook(lifetime=3600)
    session_id, _ = book.open(now=0.0)
    other_id, other = book.open(now=0.0)
    book.end(session_id)
    assert book.find(session_id, now=1.0) is None
    assert book.find(other_id, now=1.0) == other
    assert book.find("", now=1.0) is None and book.find("made-up", now=1.0) is None


def test_the_oldest_session_goes_when_the_book_is_full() -> None:
    book = SessionBook(lifetime=3600)
    first, _ = book.open(now=0.0)
    for _ in range(MAX_SESSIONS - 1):
        book.open(now=0.0)
    assert book.find(first, now=1.0) is not None
    book.open(now=0.0)
    assert book.find(first, now=1.0) is None


def test_every_session_has_its_own_id_and_csrf_token() -> None:
    book = SessionBook(lifetime=60)
    opened = [book.open(now=0.0) for _ in range(20)]
    assert len({sid for sid, _ in opened}) == 20 and len({s.csrf for _, s in opened}) == 20


def test_the_cookie_is_secure_when_the_public_url_is_https(make_config: Callable[..., ApplianceConfig],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", ADMIN_TOKEN)
    config = make_config(mode="sandbox", http={"admin_token_env": "TEST_APPLIANCE_ADMIN_TOKEN",
                                               "public_url": "https://mail.example.test", "session_hours": 2})
    with serve_dashboard(config) as app:
        client = app.client()
        form = client.get("/ui/login")
        done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": ADMIN_TOKEN})
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("appliance_ui="))
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "max-age=7200"} <= attributes
