"""JMAP over HTTP in stalwart mode: the same paths as ``appliance.api.jmap``, forwarded to Stalwart.

The handlers are thin: they identify the caller (the same guard and key rule as the local
server), read what the request carries, and hand it to the ``JmapProxy`` the mode provides
(``jmap_proxy``, by dependency injection). What the proxy does is in ``appliance.jmap.proxy``.
"""

from __future__ import annotations

__all__ = ["jmap_proxy_router"]

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromPath
from litestar.response import Response, Stream

from appliance.api.auth import require_caller
from appliance.api.jmap import jmap_guard
from appliance.config import ApplianceConfig
from appliance.jmap.proto import RequestError
from appliance.jmap.proxy import JmapProxy, ProxyCaller, UpstreamError

_ENCODER = msgspec.json.Encoder()


def _problem(error: UpstreamError) -> Response[bytes]:
    return Response(_ENCODER.encode(error.problem), status_code=error.status, media_type="application/problem+json")


def _who(request: Request[Any, Any, Any], proxy: JmapProxy) -> ProxyCaller:
    return proxy.caller(require_caller(request, realm="jmap"))


def _base_url(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


def _over(cap: int, limit: str, status: int) -> UpstreamError:
    return UpstreamError.of(RequestError("limit", f"the body is over {limit} ({cap} octets)", status=status,
                                         limit=limit))


def _declared_over(request: Request[Any, Any, Any], cap: int) -> bool:
    declared = request.headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > cap


async def _capped(request: Request[Any, Any, Any], cap: int, limit: str, status: int) -> AsyncIterator[bytes]:
    """The body in chunks, stopped (an ``UpstreamError``) once past ``cap``: nothing larger is forwarded."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _over(cap, limit, status)
        yield chunk


@get(["/.well-known/jmap", "/api/v1/jmap/session"], guards=[jmap_guard], name="jmap-session")
async def proxy_session(request: Request[Any, Any, Any], jmap_proxy: NamedDependency[JmapProxy]) -> Response[bytes]:
    """The JMAP Session: Stalwart's, with our account ids, our URLs and the vendor capability."""
    try:
        found = await jmap_proxy.session(_who(request, jmap_proxy), _base_url(request))
    except UpstreamError as error:
        return _problem(error)
    return Response(_ENCODER.encode(found), media_type="application/json",
                    headers={"cache-control": "no-cache, no-store"})


@post(["/api/v1/jmap", "/jmap"], guards=[jmap_guard], name="jmap-api", status_code=200)
async def proxy_api(request: Request[Any, Any, Any], jmap_proxy: NamedDependency[JmapProxy]) -> Response[bytes]:
    """A JMAP API request: each call checked against the caller's accounts, the allowed ones forwarded."""
    cap = jmap_proxy.service.limits.max_size_request
    try:
        if _declared_over(request, cap):
            raise _over(cap, "maxSizeRequest", 400)
        body = b"".join([chunk async for chunk in _capped(request, cap, "maxSizeRequest", 400)])
        answer = await jmap_proxy.api(_who(request, jmap_proxy), body)
    except UpstreamError as error:
        return _problem(error)
    return Response(_ENCODER.encode(answer), media_type="application/json")


@post("/api/v1/jmap/upload/{account_id:str}", guards=[jmap_guard], name="jmap-upload", status_code=201)
async def proxy_upload(request: Request[Any, Any, Any], jmap_proxy: NamedDependency[JmapProxy],
                       account_id: FromPath[str]) -> Response[bytes]:
    """Upload a blob (RFC 8620 6.1): the body streams to Stalwart; the answer names our account."""
    cap = jmap_proxy.service.limits.max_size_upload
    try:
        if _declared_over(request, cap):
            raise _over(cap, "maxSizeUpload", 413)
        answer = await jmap_proxy.upload(_who(request, jmap_proxy), account_id, request.headers.get("content-type"),
                                         _capped(request, cap, "maxSizeUpload", 413))
    except UpstreamError as error:
        return _problem(error)
    return Response(_ENCODER.encode(answer), status_code=201, media_type="application/json")


@get("/api/v1/jmap/download/{account_id:str}/{blob_id:str}/{name:str}", guards=[jmap_guard], name="jmap-download")
async def proxy_download(request: Request[Any, Any, Any], jmap_proxy: NamedDependency[JmapProxy],
                         account_id: FromPath[str], blob_id: FromPath[str], name: FromPath[str]) -> Response[Any]:
    """Download a blob (RFC 8620 6.2): Stalwart's bytes, streamed, its Content-Type and Content-Disposition kept."""
    try:
        found = await jmap_proxy.download(_who(request, jmap_proxy), account_id, blob_id, name,
                                          request.query_params.get("accept"))
    except UpstreamError as error:
        return _problem(error)
    headers = {k: v for k, v in found.headers.items() if k != "content-type"}
    # never rendered by a browser on our origin: the same as the local server's downloads
    headers.update({"x-content-type-options": "nosniff", "content-security-policy": "sandbox"})
    return Stream(found.body, status_code=found.status, media_type=found.headers.get("content-type",
                                                                                     "application/octet-stream"),
                  headers=headers)


@get("/api/v1/jmap/eventsource", guards=[jmap_guard], name="jmap-eventsource")
async def proxy_eventsource(request: Request[Any, Any, Any], jmap_proxy: NamedDependency[JmapProxy]) -> Response[Any]:
    """Push (RFC 8620 7.3): Stalwart's event stream, its StateChanges naming our account ids."""
    params = request.query_params
    closeafter = (params.get("closeafter") or "no").strip()
    if closeafter not in ("state", "no"):
        raise ClientException("closeafter: state or no")
    ping = (params.get("ping") or "0").strip()
    if not ping.isascii() or not ping.isdigit() or len(ping) > 9:
        raise ClientException("ping: a number of seconds")
    try:
        found = await jmap_proxy.eventsource(_who(request, jmap_proxy), (params.get("types") or "*").strip(),
                                             closeafter, ping, request.headers.get("last-event-id"))
    except UpstreamError as error:
        return _problem(error)
    return Stream(found.body, status_code=200, media_type="text/event-stream", headers={"cache-control": "no-cache"})


def jmap_proxy_router(config: ApplianceConfig) -> Router:
    """The JMAP routes of stalwart mode: bodies limited by the Session's limits, read after the caller is known."""
    del config  # the limits come from the running appliance's JmapService
    routes: list[Any] = [proxy_session, proxy_api, proxy_upload, proxy_download, proxy_eventsource]
    return Router(path="/", route_handlers=routes, request_max_body_size=None)
