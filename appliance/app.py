"""The HTTP face of the appliance: ``create_app(config)`` picks the mode and builds the Litestar app.

The mode (``appliance.modes``) mounts the routes, starts and stops the
``Runtime`` and the mode's intake, and provides the running parts to the
handlers by dependency injection. What is the same in every mode lives here:

Limits on what a request may make the appliance do, before any handler runs:

- bodies: ``JSON_BODY_LIMIT`` for every route but those whose body carries a whole
  message (``message_body_limit``: Stalwart's MTA hook, sends); a larger ``Content-Length`` is a
  413 before anything is read, and authentication (guards) runs before the body is read;
- JSON nested deeper than the decoder's recursion limit is a 400, not a 500;
- error replies quote at most ``ERROR_QUOTE_LIMIT`` characters of anything (a
  10 kB path or query string is not echoed back whole).
"""

from __future__ import annotations

__all__ = ["ERROR_QUOTE_LIMIT", "JSON_BODY_LIMIT", "create_app", "message_body_limit"]

from typing import Any

from litestar import Litestar, Request, get
from litestar.datastructures import State
from litestar.exceptions import ClientException, HTTPException
from litestar.exceptions.responses import create_exception_response
from litestar.response import Response

from appliance.api.bodies import JSON_BODY_LIMIT, message_body_limit
from appliance.api.schema import openapi_config
from appliance.config import ApplianceConfig
from appliance.modes.mode import Mode
from appliance.modes.sandbox import SandboxMode
from appliance.modes.stalwart import StalwartMode
from appliance.runtime import Runtime

ERROR_QUOTE_LIMIT = 500
"""Characters of an error reply's ``detail`` (and of each string in its ``extra``) at most."""

MODES: dict[str, type[Mode]] = {"sandbox": SandboxMode, "stalwart": StalwartMode}


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
    """200 once the mode's intake (SMTP or the hook) and HTTP both accept and every part the mode runs
    (Stalwart) is healthy; 503 before, while stopping, and while a part is not (each part's status shown)."""
    runtime: Runtime = state.runtime
    parts = {name: check() for name, check in runtime.checks.items()}
    body = {name: part.status for name, part in parts.items()}
    if not (runtime.started and runtime.ready):
        return Response({"status": "starting", **body}, status_code=503)
    if not all(part.ok for part in parts.values()):
        return Response({"status": "degraded", **body}, status_code=503)
    return Response({"status": "ok", **body}, status_code=200)


def create_app(config: ApplianceConfig, runtime: Runtime | None = None) -> Litestar:
    """Build the app for ``config`` in its mode (``runtime`` lets tests pass their own)."""
    rt = runtime or Runtime(config)
    return Litestar(
        route_handlers=[healthz],
        plugins=[MODES[config.mode](rt)],
        state=State({"runtime": rt}),  # healthz and the CLI's start-up watch read it; handlers get parts by DI
        openapi_config=openapi_config(title="Mail appliance", version="0.1.0"),  # Swagger UI served locally
        request_max_body_size=JSON_BODY_LIMIT,
        request_class=_Request,
        exception_handlers={HTTPException: _bounded_error},
        logging_config=None,  # logs are configured once for the process (appliance.logs)
    )
