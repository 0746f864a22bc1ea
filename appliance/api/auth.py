"""Who is calling: the admin (operator tools) or an agent (its own key).

Routes that take a body check the caller with a guard (``admin_guard``, ``agent_guard``):
Litestar runs guards before it reads the body, so a stranger's 40 MB upload is a 401
without a byte of it read or parsed.
"""

from __future__ import annotations

__all__ = ["admin_guard", "agent_guard", "bearer", "require_admin", "require_agent"]

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from appliance.runtime import Runtime


def bearer(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """The bearer token of the request, or ""."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_admin(connection: ASGIConnection) -> None:  # type: ignore[type-arg]
    """401 unless the request carries the admin token."""
    runtime: Runtime = connection.app.state.runtime
    if not hmac.compare_digest(bearer(connection).encode(), runtime.admin_token.encode()):
        raise NotAuthorizedException("admin token required (Authorization: Bearer <token>)")


def require_agent(connection: ASGIConnection) -> str:  # type: ignore[type-arg]
    """The agent whose key the request carries; 401 otherwise."""
    runtime: Runtime = connection.app.state.runtime
    token = bearer(connection).encode()
    for key, agent in runtime.agent_keys.items():
        if hmac.compare_digest(token, key.encode()):
            return agent
    raise NotAuthorizedException("agent API key required (Authorization: Bearer <key>)")


def admin_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard form of ``require_admin``."""
    require_admin(connection)


def agent_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Litestar guard form of ``require_agent`` (the handler asks ``require_agent`` again for the name)."""
    require_agent(connection)
