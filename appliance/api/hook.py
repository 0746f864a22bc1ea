"""``POST /hooks/mta``: Stalwart's MTA hook (stalwart mode).

Stalwart authenticates with the secret held in the environment variable named
by ``hook.secret_env``, as a Bearer token or as the password of HTTP Basic (any
username). No secret configured means no caller is accepted. A body that is
not a hook request is a 400 saying why, which Stalwart turns into a 451
(``tempFailOnError``): the sending server retries, nothing is lost.
"""

from __future__ import annotations

__all__ = ["hook_router", "mta_hook", "presented_secret"]

import base64
import binascii
import hmac
import os

import msgspec
from litestar import Request, Router, post
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.response import Response

from appliance.api.bodies import message_body_limit
from appliance.config import ApplianceConfig
from appliance.inbound.reception import Reception
from appliance.stalwart.hook import HookRequestError, MtaHook
from appliance.stalwart.proto import decode_request, encode_response

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mta-hook", Basic realm="mta-hook"'}


def presented_secret(authorization: str) -> str | None:
    """The secret in an Authorization header: a Bearer token, or the Basic password."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def _authorize(request: Request, secret_env: str) -> None:  # type: ignore[type-arg]
    secret = os.environ.get(secret_env, "")
    presented = presented_secret(request.headers.get("authorization", ""))
    if not secret:
        # Fail closed: an unset secret must not mean "anyone may decide what reaches the agents".
        raise NotAuthorizedException(f"MTA hook secret not configured (set {secret_env})",
                                     headers=_CHALLENGE)
    if presented is None or not hmac.compare_digest(presented.encode(), secret.encode()):
        raise NotAuthorizedException("MTA hook secret required (Bearer, or Basic password)",
                                     headers=_CHALLENGE)


@post("/hooks/mta", status_code=200, summary="Stalwart MTA hook")
async def mta_hook(request: Request, config: NamedDependency[ApplianceConfig],  # type: ignore[type-arg]
                   reception: NamedDependency[Reception]) -> Response[bytes]:
    """Answer one MTA hook call: accept, reject with an SMTP reply, or discard."""
    _authorize(request, config.hook.secret_env)
    body = await request.body()
    try:
        hook_request = decode_request(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise ValidationException(f"not an MTA hook request: {exc}") from None
    hook = MtaHook(reception, reports=config)
    try:
        answer = await hook.answer(hook_request)
    except HookRequestError as exc:
        raise ValidationException(f"not an MTA hook request: {exc}") from None
    return Response(content=encode_response(answer), media_type=MediaType.JSON, status_code=200)


def hook_router(config: ApplianceConfig) -> Router:
    """The hook with its own body limit: its body carries a whole message (the closest layer's limit wins)."""
    return Router(path="/", route_handlers=[mta_hook], request_max_body_size=message_body_limit(config))
