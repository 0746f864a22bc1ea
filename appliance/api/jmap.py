"""JMAP over HTTP (RFC 8620): the Session, the API endpoint, upload, download and EventSource push.

    GET  /.well-known/jmap, /api/v1/jmap/session     the Session (RFC 8620 2)
    POST /api/v1/jmap, /jmap                         API requests (RFC 8620 3)
    POST /api/v1/jmap/upload/{accountId}             a blob (RFC 8620 6.1)
    GET  /api/v1/jmap/download/{accountId}/{blobId}/{name}?accept=type   (RFC 8620 6.2)
    GET  /api/v1/jmap/eventsource?types=&closeafter=&ping=               (RFC 8620 7.3)

``Authorization: Bearer`` with an agent's key (its own account) or the admin
token (every account). Authentication runs as a guard, before any body is
read; bodies are then read in chunks up to the Session's limits
(``maxSizeRequest``, ``maxSizeUpload``), so nothing larger is ever held.
Request-level errors are ``application/problem+json`` (RFC 7807). A download
of a blob the caller may not see is a 404, exactly like one that does not
exist; downloads are always attachments, never rendered.
"""

from __future__ import annotations

__all__ = ["jmap_router"]

import re
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Router, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath
from litestar.response import Response, ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from appliance.api.auth import require_caller
from appliance.config import ApplianceConfig
from appliance.jmap import local, router
from appliance.jmap.changes import TYPES
from appliance.jmap.proto import MethodError, RequestError
from appliance.jmap.push import PING_RANGE, Subscriber
from appliance.jmap.service import Caller, JmapService
from appliance.jmap.session import session, session_state

_ENCODER = msgspec.json.Encoder()
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_PUSH_TYPES = frozenset([*TYPES, "Identity"])


def _identify(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    """The agent whose key the request carries, None for the admin token; 401 (with a challenge) otherwise."""
    return require_caller(connection, realm="jmap")


def jmap_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    _identify(connection)


def _context(request: Request, service: JmapService) -> tuple[JmapService, Caller]:  # type: ignore[type-arg]
    return service, service.caller(_identify(request))


def _problem(error: RequestError) -> Response[bytes]:
    return Response(_ENCODER.encode(error.body()), status_code=error.status, media_type="application/problem+json")


async def _body(request: Request, cap: int, limit: str, status: int) -> bytes:  # type: ignore[type-arg]
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise RequestError("limit", f"the body is over {limit} ({cap} octets)", status=status, limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise RequestError("limit", f"the body is over {limit} ({cap} octets)", status=status, limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _base_url(request: Request) -> str:  # type: ignore[type-arg]
    return str(request.base_url).rstrip("/")


@get(["/.well-known/jmap", "/api/v1/jmap/session"], guards=[jmap_guard], name="jmap-session")
async def jmap_session(request: Request[Any, Any, Any],
                       jmap: NamedDependency[JmapService]) -> Response[bytes]:
    """The JMAP Session: capabilities, the caller's accounts, the API, upload, download and push URLs."""
    service, caller = _context(request, jmap)
    return Response(_ENCODER.encode(session(service, caller, _base_url(request))), media_type="application/json",
                    headers={"cache-control": "no-cache, no-store"})


@post(["/api/v1/jmap", "/jmap"], guards=[jmap_guard], name="jmap-api", status_code=200)
async def jmap_api(request: Request[Any, Any, Any], jmap: NamedDependency[JmapService]) -> Response[bytes]:
    """A JMAP API request (RFC 8620 3): method calls in, method responses out."""
    service, caller = _context(request, jmap)
    limits = service.limits
    if service.inflight[caller.name] >= limits.max_concurrent_requests:
        return _problem(RequestError("limit", "too many requests at once", status=429,
                                     limit="maxConcurrentRequests"))
    service.inflight[caller.name] += 1
    try:
        body = await _body(request, limits.max_size_request, "maxSizeRequest", 400)
        answer = await router.handle(service, caller, body, request.headers.get("content-type"),
                                     session_state(service, caller))
    except RequestError as error:
        return _problem(error)
    finally:
        service.inflight[caller.name] -= 1
    return Response(_ENCODER.encode(answer), media_type="application/json")


async def _account(service: JmapService, caller: Caller, account_id: str) -> str:
    try:
        return await service.agent_for(caller, account_id)
    except MethodError:
        raise NotFoundException("no such account") from None


@post("/api/v1/jmap/upload/{account_id:str}", guards=[jmap_guard], name="jmap-upload", status_code=201)
async def jmap_upload(request: Request[Any, Any, Any], jmap: NamedDependency[JmapService],
                      account_id: FromPath[str]) -> Response[bytes]:
    """Upload a blob (RFC 8620 6.1): the body's bytes, typed by its Content-Type; kept a day."""
    service, caller = _context(request, jmap)
    agent = await _account(service, caller, account_id)
    if service.uploads[caller.name] >= service.limits.max_concurrent_upload:
        return _problem(RequestError("limit", "too many uploads at once", status=429, limit="maxConcurrentUpload"))
    service.uploads[caller.name] += 1
    try:
        data = await _body(request, service.limits.max_size_upload, "maxSizeUpload", 413)
    except RequestError as error:
        return _problem(error)
    finally:
        service.uploads[caller.name] -= 1
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    media = media if _MEDIA_TYPE.fullmatch(media) else "application/octet-stream"
    blob_id = "U" + secrets.token_hex(16)
    await service.db.write(lambda con: local.save_blob(con, agent, blob_id, media, data))
    return Response(_ENCODER.encode({"accountId": account_id, "blobId": blob_id, "type": media, "size": len(data)}),
                    status_code=201, media_type="application/json")


@get("/api/v1/jmap/download/{account_id:str}/{blob_id:str}/{name:str}", guards=[jmap_guard], name="jmap-download")
async def jmap_download(request: Request[Any, Any, Any], jmap: NamedDependency[JmapService], account_id: FromPath[str],

                        blob_id: FromPath[str], name: FromPath[str]) -> Response[bytes]:
    """Download a blob (RFC 8620 6.2): an upload, an Email's message, or one of its parts."""
    service, caller = _context(request, jmap)
    agent = await _account(service, caller, account_id)
    await service.ready(sync=True)
    found = await service.db.read(lambda con: local.blob_data(con, agent, blob_id))
    if found is None:
        raise NotFoundException("no such blob")
    data, media = found
    accept = request.query_params.get("accept") or ""
    media = accept.lower() if _MEDIA_TYPE.fullmatch(accept) else media
    filename = name.replace('"', "").replace("\r", "").replace("\n", "")[:200] or "blob"
    return Response(data, media_type=media, headers={
        "content-disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
        "x-content-type-options": "nosniff", "content-security-policy": "sandbox",
        "cache-control": "private, immutable, max-age=31536000"})


def _types(value: str | None) -> frozenset[str] | None:
    if value is None or value.strip() == "*":
        return None
    names = frozenset(t.strip() for t in value.split(",") if t.strip())
    unknown = names - _PUSH_TYPES
    if unknown:
        raise ClientException(f"types: unknown type names {', '.join(sorted(unknown))}")
    return names


@get("/api/v1/jmap/eventsource", guards=[jmap_guard], name="jmap-eventsource")
async def jmap_eventsource(request: Request[Any, Any, Any],
                           jmap: NamedDependency[JmapService]) -> ServerSentEvent:
    """Push (RFC 8620 7.3): a ``state`` event carrying a StateChange whenever the caller's data changes."""
    service, caller = _context(request, jmap)
    params = request.query_params
    types = _types(params.get("types"))
    close_after = (params.get("closeafter") or "no").strip()
    if close_after not in ("state", "no"):
        raise ClientException("closeafter: state or no")
    ping_text = (params.get("ping") or "0").strip()
    if not ping_text.isascii() or not ping_text.isdigit() or len(ping_text) > 9:
        raise ClientException("ping: a number of seconds")
    ping = int(ping_text)
    if ping:
        ping = min(max(ping, PING_RANGE[0]), PING_RANGE[1])
    await service.ready()
    subscriber = Subscriber({a: local.account_id(a) for a in caller.agents}, types)
    last = request.headers.get("last-event-id")

    async def events() -> AsyncIterator[ServerSentEventMessage]:
        async for event in service.push.stream(subscriber, close_after_state=close_after == "state", ping=ping,
                                               last_event_id=last):
            if event.event is None:
                yield ServerSentEventMessage(data=None, comment=event.data)
            else:
                yield ServerSentEventMessage(event=event.event, data=event.data, id=event.id)

    return ServerSentEvent(events(), headers={"cache-control": "no-cache"})


def jmap_router(config: ApplianceConfig) -> Router:
    """The JMAP routes: bodies are limited by the Session's own limits, read after the caller is known."""
    del config  # the limits come from the running appliance's JmapService
    routes: list[Any] = [jmap_session, jmap_api, jmap_upload, jmap_download, jmap_eventsource]
    return Router(path="/", route_handlers=routes, request_max_body_size=None)
