"""Capability-token introspection (RFC 7662's shape): what does this token grant?"""

from __future__ import annotations

__all__ = ["IntrospectRequest", "introspect_token"]

import hmac
from urllib.parse import parse_qs

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, NotAuthorizedException, ServiceUnavailableException

from appliance.api.auth import bearer, require_agent
from appliance.delivery.tokens import Introspection
from appliance.runtime import Runtime


class IntrospectRequest(msgspec.Struct, frozen=True, kw_only=True):
    token: str


@post("/api/v1/tokens/introspect", status_code=200)
async def introspect_token(request: Request, state: State) -> Introspection:  # type: ignore[type-arg]
    """``{"token": ...}`` (JSON, or the form field ``token``) -> ``{"active": ...}`` and the grants.

    The admin token may introspect any token; an agent's key only the agent's own
    (another agent's token is reported inactive). Expired or tampered: ``active`` false.
    """
    runtime: Runtime = state.runtime
    caller: str | None
    if runtime.admin_token and hmac.compare_digest(bearer(request).encode(), runtime.admin_token.encode()):
        caller = None
    else:
        try:
            caller = require_agent(request)
        except NotAuthorizedException:
            raise NotAuthorizedException("admin token or agent API key required") from None
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
    else:
        try:
            token = msgspec.json.decode(body, type=IntrospectRequest).token
        except msgspec.DecodeError as exc:
            raise ClientException(f"expected {{\"token\": \"...\"}}: {exc}") from exc
    if runtime.dispatcher is None:
        raise ServiceUnavailableException("the appliance is starting")
    return runtime.dispatcher.tokens.introspect(token, agent=caller)
