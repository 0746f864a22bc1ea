"""Dashboard logins: the admin token exchanged for a server-side session.

Why server-side and not a signed cookie: logout must end the session for good. A signed cookie
stays valid wherever a copy of it went until it expires; a session the server forgets is gone
at once (the same cookie presented again is refused). The appliance is one process, so the
sessions live in its memory: a restart logs everyone out, which costs an operator one login.

The cookie holds a random id (256 bits); the book keys sessions by the id's SHA-256, so a
lookup compares digests, never the secret itself, and a memory dump shows no usable id. Each
session carries its own CSRF token (synchronizer token): every dashboard form posts it back.
"""

from __future__ import annotations

__all__ = ["LOGIN_CSRF_COOKIE", "MAX_SESSIONS", "SESSION_COOKIE", "Session", "SessionBook", "tokens_match"]

import hashlib
import hmac
import secrets

import msgspec

SESSION_COOKIE = "appliance_ui"
"""The session cookie's name (path ``/ui``)."""
LOGIN_CSRF_COOKIE = "appliance_ui_login"
"""Before a session exists the login form is protected by double submit: this cookie and the form agree."""
MAX_SESSIONS = 256
"""Sessions kept at most; the oldest goes first (only the admin can make them, so this bounds mistakes)."""


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One login: its CSRF token and when it ends (unix seconds)."""

    csrf: str
    created: float
    expires: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionBook:
    """The live sessions of one running app, each valid until it expires or is ended."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._sessions: dict[str, Session] = {}

    def open(self, now: float) -> tuple[str, Session]:
        """A new session: its id (for the cookie, never stored as such) and the session."""
        self._prune(now)
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]  # dicts keep insertion order: the oldest
        session_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), created=now, expires=now + self.lifetime)
        self._sessions[_key(session_id)] = session
        return session_id, session

    def find(self, session_id: str, now: float) -> Session | None:
        """The session ``session_id`` names, None when there is none or it has expired."""
        if not session_id:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None and session.expires <= now:
            del self._sessions[key]
            return None
        return session

    def end(self, session_id: str) -> None:
        """Forget the session (logout): its cookie is worth nothing from now on."""
        self._sessions.pop(_key(session_id), None)

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]


def tokens_match(expected: str, given: str) -> bool:
    """Whether a CSRF token posted back is the expected one (constant time; empty never matches)."""
    return bool(expected and given) and hmac.compare_digest(expected.encode(), given.encode())
