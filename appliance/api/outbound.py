"""Agents act: send a reply or new mail, look up a message, follow what they sent.

- ``POST /api/v1/messages/{emailId}/reply`` and ``POST /api/v1/messages`` (agent key; the
  capability token in ``X-Capability-Token`` or ``capabilityToken``; optional
  ``Idempotency-Key``; body ``SendRequest``): 202 ``SendResult`` once the message is queued.
- ``GET /api/v1/messages/{emailId}`` (agent key): the summary of one of the agent's
  messages, received or sent.
- ``GET /api/v1/outbox?limit=&after=`` and ``GET /api/v1/outbox/{emailId}`` (agent key:
  its own; admin token: every agent's, ``agent=`` to filter): sent messages and each
  recipient's delivery status.

Handlers decide nothing: the Outbox (``appliance.outbound.service``) and the gate it
asks do. Every error of these routes (and of the blob and tool routes, which share
``ERROR_HANDLERS``) is ``{"error": "<reason_code>", "detail": "..."}``.
"""

from __future__ import annotations

__all__ = ["ERROR_HANDLERS", "error_response", "outbound_router"]

from typing import Annotated, Any

from litestar import Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Response
from litestar.types import ExceptionHandlersMap

from appliance.api.auth import agent_guard, require_agent, require_caller
from appliance.api.bodies import message_body_limit
from appliance.config import ApplianceConfig
from appliance.outbound.model import SendRequest, SendResult
from appliance.outbound.service import (
    MessageInfo,
    Outbox,
    Refused,
    SentMessage,
    list_sent,
    message_info,
    sent_message,
)
from appliance.store.database import Database

_QUOTE_LIMIT = 500
"""Characters of an error's detail at most (as ``appliance.app`` clips Litestar's own)."""

_REASONS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
            429: "rate_limited", 503: "unavailable"}
"""The reason code of an error Litestar raised itself (no handler ran: bad body, unknown route...)."""

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


def error_response(status: int, reason: str, detail: str) -> Response[dict[str, str]]:
    """The JSON error every route of the send half answers: ``{"error", "detail"}``."""
    if len(detail) > _QUOTE_LIMIT:
        detail = f"{detail[:_QUOTE_LIMIT]}... ({len(detail)} characters)"
    return Response({"error": reason, "detail": detail}, status_code=status)


def _refused(_: Request[Any, Any, Any], exc: Refused) -> Response[dict[str, str]]:
    return error_response(exc.status, exc.reason, exc.detail)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, str]]:
    detail = str(exc.detail)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        found = "; ".join(f"{e.get('key') or 'body'}: {e.get('message')}" if isinstance(e, dict) else str(e)
                          for e in exc.extra[:5])
        detail = f"{detail}: {found}" if found else detail
    reason = _REASONS.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "invalid_request")
    response = error_response(exc.status_code, reason, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


ERROR_HANDLERS: ExceptionHandlersMap = {Refused: _refused, HTTPException: _http_error}


def _token(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("x-capability-token") or None


def _idempotency_key(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get("idempotency-key")


@post("/api/v1/messages/{email_id:str}/reply", status_code=202, guards=[agent_guard])
async def send_reply(request: Request[Any, Any, Any], outbox: NamedDependency[Outbox], email_id: FromPath[str],
                     data: JSONBody[SendRequest]) -> SendResult:
    """Reply to a received message: to its verified sender, in its thread (the message's token allows it)."""
    return await outbox.submit(require_agent(request), "reply", email_id, data, _token(request),
                               _idempotency_key(request))


@post("/api/v1/messages", status_code=202, guards=[agent_guard])
async def send_new(request: Request[Any, Any, Any], outbox: NamedDependency[Outbox],
                   data: JSONBody[SendRequest]) -> SendResult:
    """Write new mail (a new thread): needs ``send_email`` granted and recipients ``allowRecipients`` covers."""
    return await outbox.submit(require_agent(request), "new", None, data, _token(request),
                               _idempotency_key(request))


@get("/api/v1/messages/{email_id:str}")
async def show_message(request: Request[Any, Any, Any], db: NamedDependency[Database],
                       email_id: FromPath[str]) -> MessageInfo:
    """One of the agent's messages, received (inbox) or sent: who, what, when, its attachments."""
    agent = require_agent(request)
    found = await db.read(lambda con: message_info(con, agent, email_id))
    if found is None:
        raise Refused(404, "not_found", f"no message {email_id} of {agent}")
    return found


def _caller(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """None for the admin (every agent's mail), else the agent whose key the request carries (401 otherwise)."""
    return require_caller(connection)


def _caller_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    _caller(connection)


@get("/api/v1/outbox", guards=[_caller_guard])
async def list_outbox(request: Request[Any, Any, Any], db: NamedDependency[Database], limit: Limit = 50,
                      after: FromQuery[str | None] = None, agent: FromQuery[str | None] = None) -> list[SentMessage]:
    """Sent messages, newest first; ``after`` (an emailId) continues after that one. An agent sees its own."""
    caller = _caller(request)
    if caller is not None:
        if agent is not None and agent.lower() != caller:
            raise Refused(403, "forbidden", "an agent's key lists only its own outbox")
        agent = caller
    return await db.read(lambda con: list_sent(con, agent=agent, limit=limit, after=after))


@get("/api/v1/outbox/{email_id:str}", guards=[_caller_guard])
async def show_outbox(request: Request[Any, Any, Any], db: NamedDependency[Database],
                      email_id: FromPath[str]) -> SentMessage:
    """One sent message and each recipient's delivery status (queued, retrying, sent, bounced)."""
    caller = _caller(request)
    found = await db.read(lambda con: sent_message(con, email_id, agent=caller))
    if found is None:
        raise NotFoundException(f"no sent message {email_id}")
    return found


def outbound_router(config: ApplianceConfig) -> Router:
    """The send routes, with their body limit and their errors."""
    return Router(path="/", route_handlers=[send_reply, send_new, show_message, list_outbox, show_outbox],
                  request_max_body_size=message_body_limit(config), exception_handlers=ERROR_HANDLERS)
