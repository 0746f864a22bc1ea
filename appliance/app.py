"""The HTTP face of the appliance: ``create_app(config)`` builds the Litestar app.

The lifespan starts and stops the ``Runtime`` (database, SMTP server,
schedulers, dispatcher); handlers reach it through ``app.state.runtime``.
"""

from __future__ import annotations

__all__ = ["create_app"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.response import Response

from appliance.api import ROUTES
from appliance.api.schema import openapi_config
from appliance.config import ApplianceConfig
from appliance.runtime import Runtime


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

    return Litestar(
        route_handlers=[healthz, *ROUTES],
        lifespan=[lifespan],
        state=State({"runtime": rt}),
        openapi_config=openapi_config(title="Mail appliance", version="0.1.0"),  # Swagger UI served locally
        request_max_body_size=config.smtp.max_message_size * 2 + 1_000_000,
        logging_config=None,  # logs are configured once for the process (appliance.logs)
    )
