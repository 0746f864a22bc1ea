"""Who did it: the name a dashboard action is audited under.

Every dashboard login is the admin (one token), so what tells two operators' actions apart, or
one operator's actions from each other on a shared machine, is the session they came through.
The session is named by the first hex digits of its CSRF token's SHA-256: stable for the
session's life, the same on every action it takes, and saying nothing about the token itself.
"""

from __future__ import annotations

__all__ = ["actor"]

import hashlib
from datetime import UTC, datetime

from appliance.dashboard.session import Session


def actor(session: Session) -> str:
    """``admin via dashboard session 1a2b3c4d (logged in 2026-12-03 14:20 UTC)``: the ``by`` of an audited action."""
    label = hashlib.sha256(session.csrf.encode()).hexdigest()[:8]
    since = datetime.fromtimestamp(session.created, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"admin via dashboard session {label} (logged in {since})"
