"""The dashboard's door: every ``/ui`` route but the login page needs a live session, and every POST its
session's CSRF token.

The admin bearer token is not a session: a browser never sends it by itself, so accepting it here
would add nothing for operators and would let a page that can attach headers skip the CSRF check.
A GET without a session is sent to the login page (303); any other method gets a 401. A POST
whose form lacks the session's ``_csrf`` token (or an ``X-CSRF-Token`` header) is a 403. The
session is checked before the body is read, so a stranger's upload is refused unread.
"""

from __future__ import annotations

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "PUBLIC", "LoginRequired", "error_page", "login_redirect", "session_guard",
           "ui_session"]

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Response, Template

from appliance.dashboard.session import SESSION_COOKIE, Session, SessionBook, tokens_match

CSRF_FIELD = "_csrf"
"""The form field every dashboard form carries (``{{ csrf_field() }}`` writes it)."""
CSRF_HEADER = "x-csrf-token"
"""The same token as a header, for a script's POST (the dashboard itself needs none)."""
PUBLIC = "ui_public"
"""``opt={PUBLIC: True}`` on a handler: reachable without a session (the login page)."""
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Guard = Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]  # type: ignore[type-arg]


class LoginRequired(NotAuthorizedException):
    """No live session: a GET is sent to the login page, anything else is a 401."""


def session_guard(book: SessionBook) -> Guard:
    """The guard of every dashboard route, over the app's sessions."""

    async def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if handler.opt.get(PUBLIC):
            return
        session = book.find(connection.cookies.get(SESSION_COOKIE, ""), time.time())
        if session is None:
            raise LoginRequired("a dashboard session is required: log in at /ui/login")
        connection.state.ui_session = session
        if isinstance(connection, Request) and connection.method not in _SAFE_METHODS:
            given = connection.headers.get(CSRF_HEADER, "")
            if not given:
                field = (await connection.form()).get(CSRF_FIELD, "")
                given = field if isinstance(field, str) else ""
            if not tokens_match(session.csrf, given):
                raise PermissionDeniedException("CSRF token missing or wrong: reload the page and submit again")

    return guard


def ui_session(request: Request[Any, Any, Any]) -> Session:
    """The request's session (the guard put it there): a dependency for handlers that need its token."""
    session: Session = request.state.ui_session
    return session


def error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Exception handler: a dashboard error as a page (a 403 for a stale form says what to do), not JSON."""
    status = exc.status_code
    headings = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found", 405: "Not allowed",
                413: "Too large", 503: "Starting"}
    return Template(template_name="error.html", status_code=status, headers=exc.headers,
                    context={"nav": (), "current": "", "title": headings.get(status, "Error"),
                             "heading": headings.get(status, "Error"), "status_code": status,
                             "detail": str(exc.detail)[:500]})


def login_redirect(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    """Exception handler: a page asked for without a session goes to the login page, which comes back here."""
    if request.method not in _SAFE_METHODS:
        return Response({"status_code": 401, "detail": exc.detail}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/ui/login?next={quote(target, safe='')}", status_code=303)
