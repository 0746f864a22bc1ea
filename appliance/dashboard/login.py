"""Logging in and out of the dashboard: the admin token for a session cookie, and back.

The login form is protected against cross-site posting before any session exists by double
submit: GET sets a random ``LOGIN_CSRF_COOKIE`` and writes the same value into the form; a POST
whose form and cookie disagree is a 403, whatever token it carries. The session cookie is
HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), scoped to
``/ui``, and Secure when the request came over HTTPS or ``http.public_url`` is https.
"""

from __future__ import annotations

__all__ = ["login_form", "login_submit", "logout"]

import secrets
import time
from typing import Any

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.response import Redirect, Template

from appliance.api.auth import credentials
from appliance.config import ApplianceConfig
from appliance.dashboard.guard import CSRF_FIELD, PUBLIC
from appliance.dashboard.pages import page
from appliance.dashboard.session import LOGIN_CSRF_COOKIE, SESSION_COOKIE, SessionBook, tokens_match

_LOGIN_CSRF_AGE = 3600
"""Seconds a login form stays valid."""


def _secure(request: Request[Any, Any, Any], config: ApplianceConfig) -> bool:
    public = config.http.public_url or ""
    return request.url.scheme == "https" or public.lower().startswith("https://")


def _cookie(key: str, value: str, *, secure: bool, max_age: int | None) -> Cookie:
    return Cookie(key=key, value=value, path="/ui", httponly=True, samesite="strict", secure=secure, max_age=max_age)


def _next(target: str) -> str:
    """Where to go after logging in: a dashboard path only (never another site: no open redirect)."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


def _login_page(request: Request[Any, Any, Any], *, error: str = "", status_code: int = 200) -> Template:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = page("login.html", current="", title="Log in", status_code=status_code, login_csrf=token,
                    error=error, next=_next(request.query_params.get("next", "")))
    # Secure only when this request is HTTPS: a login nonce, not a credential; the session cookie follows public_url
    response.cookies.append(_cookie(LOGIN_CSRF_COOKIE, token, secure=request.url.scheme == "https",
                                    max_age=_LOGIN_CSRF_AGE))
    return response


@get("/login", opt={PUBLIC: True}, name="ui_login", sync_to_thread=False)
def login_form(request: Request[Any, Any, Any]) -> Template:
    """The login form (one field: the admin token)."""
    return _login_page(request)


@post("/login", opt={PUBLIC: True}, status_code=303)
async def login_submit(request: Request[Any, Any, Any], config: NamedDependency[ApplianceConfig],
                       sessions: NamedDependency[SessionBook]) -> Redirect | Template:
    """Check the form's CSRF value and the token; a session cookie and the page asked for, or the form again (401)."""
    form = await request.form()
    posted = form.get(CSRF_FIELD, "")
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE, ""), posted if isinstance(posted, str) else ""):
        raise PermissionDeniedException("CSRF token missing or wrong: reload the login page and submit again")
    token = form.get("token", "")
    if not (isinstance(token, str) and credentials(request).is_admin(token.strip())):
        return _login_page(request, error="That is not the admin token.", status_code=401)
    session_id, session = sessions.open(time.time())
    target = form.get("next", "")
    response = Redirect(_next(target if isinstance(target, str) else ""), status_code=303)
    secure = _secure(request, config)
    response.cookies.append(_cookie(SESSION_COOKIE, session_id, secure=secure,
                                    max_age=int(session.expires - session.created)))
    response.cookies.append(_cookie(LOGIN_CSRF_COOKIE, "", secure=request.url.scheme == "https", max_age=0))
    return response


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any], config: NamedDependency[ApplianceConfig],
                 sessions: NamedDependency[SessionBook]) -> Redirect:
    """End the session (the guard checked it and its CSRF token) and drop the cookie."""
    sessions.end(request.cookies.get(SESSION_COOKIE, ""))
    response = Redirect("/ui/login", status_code=303)
    response.cookies.append(_cookie(SESSION_COOKIE, "", secure=_secure(request, config), max_age=0))
    return response
