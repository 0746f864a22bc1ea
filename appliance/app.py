"""The HTTP face of the appliance: ``create_app(config)`` builds the Litestar app.

The lifespan starts and stops the ``Runtime`` (database, SMTP server,
schedulers, dispatcher); handlers reach it through ``app.state.runtime``.

Limits on what a request may make the appliance do, before any handler runs:

- bodies: ``JSON_BODY_LIMIT`` for every route but Stalwart's MTA hook, whose body
  carries a whole message (``hook_body_limit``); a larger ``Content-Length`` is a
  413 before anything is read, and authentication (guards) runs before the body is read;
- JSON nested deeper than the decoder's recursion limit is a 400, not a 500;
- error replies quote at most ``ERROR_QUOTE_LIMIT`` characters of anything (a
  10 kB path or query string is not echoed back whole).
"""

from __future__ import annotations

__all__ = ["ERROR_QUOTE_LIMIT", "JSON_BODY_LIMIT", "create_app", "hook_body_limit"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Router, get
from litestar.datastructures import State
from litestar.exceptions import ClientException, HTTPException
from litestar.exceptions.responses import create_exception_response
from litestar.response import Response

from appliance.api import ROUTES
from appliance.api.blobs import blob_router
from appliance.api.hook import mta_hook
from appliance.api.jmap import jmap_router
from appliance.api.outbound import outbound_router
from appliance.api.schema import openapi_config
from appliance.api.tools import tools_router
from appliance.config import ApplianceConfig
from appliance.runtime import Runtime

JSON_BODY_LIMIT = 64 * 1024
"""Bytes of a request body at most, on every route but the MTA hook (admin and agent JSON is small)."""

ERROR_QUOTE_LIMIT = 500
"""Characters of an error reply's ``detail`` (and of each string in its ``extra``) at most."""


def hook_body_limit(config: ApplianceConfig) -> int:
    """The MTA hook's body limit: the whole message as a JSON string (escapes may double it), plus the envelope."""
    return config.smtp.max_message_size * 2 + 1_000_000


class _Request(Request[Any, Any, Any]):
    """Litestar's request, but JSON too deeply nested for the decoder is the client's error (400), not a 500."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("request body: JSON nested too deeply") from None


def _clip(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        if len(value) <= ERROR_QUOTE_LIMIT:
            return value
        return f"{value[:ERROR_QUOTE_LIMIT]}... ({len(value)} characters)"
    if depth > 3:
        return None
    if isinstance(value, list):
        return [_clip(v, depth + 1) for v in value[:10]]
    if isinstance(value, dict):
        return {_clip(k, depth + 1): _clip(v, depth + 1) for k, v in list(value.items())[:20]}
    return value


def _bounded_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's error reply, with whatever it quotes cut to ``ERROR_QUOTE_LIMIT`` characters."""
    exc.detail = _clip(exc.detail)
    if exc.extra is not None:
        exc.extra = _clip(exc.extra)
    return create_exception_response(request, exc)


@get("/healthz", include_in_schema=False, sync_to_thread=False)
def healthz(state: State) -> Response[dict[str, str]]:
    """200 once SMTP and HTTP both accept connections; 503 before and while stopping."""
    runtime: Runtime = state.runtime
    if runtime.started and runtime.smtp_ready:
        return Response({"status": "ok"}, status_code=200)
    return Response({"status": "starting"}, status_code=503)


def create_app(config: ApplianceConfig, runtime: Runtime | None = None) -> Litestar:
    """Build the app for ``config`` (``runtime`` lets tests pass their own)."""
    rt = runtime or Runtime(config)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await rt.start()
        try:
            yield
        finally:
            await rt.stop()

    # The hook's limit depends on the configuration: its own router carries it (the closest layer wins).
    hook = Router(path="/", route_handlers=[mta_hook], request_max_body_size=hook_body_limit(config))
    return Litestar(
        route_handlers=[healthz, *(r for r in ROUTES if r is not mta_hook), hook, jmap_router(config),
                        # the send half: each with its body limit, its {"error", "detail"} errors, its services
                        outbound_router(config), blob_router(config), tools_router()],
        lifespan=[lifespan],
        state=State({"runtime": rt}),
        openapi_config=openapi_config(title="Mail appliance", version="0.1.0"),  # Swagger UI served locally
        request_max_body_size=JSON_BODY_LIMIT,
        request_class=_Request,
        exception_handlers={HTTPException: _bounded_error},
        logging_config=None,  # logs are configured once for the process (appliance.logs)
    )
