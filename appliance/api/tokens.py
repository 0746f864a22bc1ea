"""Capability-token introspection (RFC 7662's shape): what does this token grant?"""

from __future__ import annotations

__all__ = ["IntrospectRequest", "introspect_token"]

from urllib.parse import parse_qs

import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException

from appliance.api.auth import require_caller
from appliance.delivery.dispatcher import Dispatcher
from appliance.delivery.tokens import Introspection


class IntrospectRequest(msgspec.Struct, frozen=True, kw_only=True):
    token: str


@post("/api/v1/tokens/introspect", status_code=200)
async def introspect_token(request: Request, dispatcher: NamedDependency[Dispatcher]) -> Introspection:  # type: ignore[type-arg]
    """``{"token": ...}`` (JSON, or the form field ``token``) -> ``{"active": ...}`` and the grants.

    The admin token may introspect any token; an agent's key only the agent's own
    (another agent's token is reported inactive). Expired or tampered: ``active`` false.
    """
    caller = require_caller(request)
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
    else:
        try:
            token = msgspec.json.decode(body, type=IntrospectRequest).token
        except msgspec.DecodeError as exc:
            raise ClientException(f"expected {{\"token\": \"...\"}}: {exc}") from exc
    return dispatcher.tokens.introspect(token, agent=caller)
