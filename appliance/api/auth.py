"""Who is calling: the admin (operator tools) or an agent (its own key).

Routes that take a body check the caller with a guard (``admin_guard``, ``agent_guard``):
Litestar runs guards before it reads the body, so a stranger's 40 MB upload is a 401
without a byte of it read or parsed. The mode puts the running appliance's
``Credentials`` in ``app.state.credentials`` when it starts.
"""

from __future__ import annotations

__all__ = ["Credentials", "admin_guard", "agent_guard", "bearer", "credentials", "require_admin", "require_agent",
           "require_caller"]

import hmac

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """The secrets callers present: the admin token and each agent's API key."""

    admin_token: str
    agent_keys: dict[str, str]
    """API key -> agent address."""
    metrics_token: str = ""
    """What Prometheus presents for ``/metrics`` (besides the admin token); empty when none is set."""

    def is_admin(self, token: str) -> bool:
        """True when ``token`` is the admin token (compared in constant time; an empty token never is)."""
        return bool(token and self.admin_token) and hmac.compare_digest(token.encode(), self.admin_token.encode())

    def may_read_metrics(self, token: str) -> bool:
        """True for the admin token or the metrics token (both compared; an empty token never matches)."""
        metrics = bool(token and self.metrics_token) and hmac.compare_digest(token.encode(),
                                                                             self.metrics_token.encode())
        return self.is_admin(token) | metrics

    def agent_for(self, token: str) -> str | None:
        """The agent whose key ``token`` is, or None (every key is compared, in constant time)."""
        found = None
        for key, agent in self.agent_keys.items():
            if token and hmac.compare_digest(token.encode(), key.encode()):
                found = agent
        return found


def credentials(connection: ASGIConnection) -> Credentials:  # type: ignore[type-arg]
    """The running appliance's credentials; before it started, nobody's key is valid."""
    found: Credentials | None = getattr(connection.app.state, "credentials", None)
    return found if found is not None else Credentials(admin_token="", agent_keys={})


def bearer(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """The bearer token of the request, or ""."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_admin(connection: ASGIConnection) -> None:  # type: ignore[type-arg]
    """401 unless the request carries the admin token."""
    if not credentials(connection).is_admin(bearer(connection)):
        raise NotAuthorizedException("admin token required (Authorization: Bearer <token>)")


def require_agent(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """The agent whose key the request carries; 401 otherwise."""
    agent = credentials(connection).agent_for(bearer(connection))
    if agent is None:
        raise NotAuthorizedException("agent API key required (Authorization: Bearer <key>)")
    return agent


def require_caller(connection: ASGIConnection, *, realm: str | None = None) -> str | None:  # type: ignore[type-arg]
    """None for the admin (who sees every agent), else the agent whose key the request carries; 401 otherwise.

    ``realm`` adds a ``WWW-Authenticate: Bearer realm=...`` challenge to the 401 (JMAP clients expect one).
    """
    found = credentials(connection)
    token = bearer(connection)
    if found.is_admin(token):
        return None
    agent = found.agent_for(token)
    if agent is None:
        raise NotAuthorizedException("an agent API key or the admin token is required (Authorization: Bearer <key>)",
                                     headers={"WWW-Authenticate": f'Bearer realm="{realm}"'} if realm else None)
    return agent


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard form of ``require_admin``."""
    require_admin(connection)


def agent_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard form of ``require_agent`` (the handler asks ``require_agent`` again for the name)."""
    require_agent(connection)
