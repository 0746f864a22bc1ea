"""What every mode does as a Litestar InitPlugin: mount its routes, provide the running parts by DI,
start the runtime (and the mode's own intake) in the app's lifespan and stop them in reverse."""

from __future__ import annotations

__all__ = ["Mode"]

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.plugins import InitPluginProtocol
from litestar.types import ControllerRouterHandler

from appliance.api import agent_and_admin_routes
from appliance.api.auth import Credentials
from appliance.dashboard import dashboard_routes, template_config
from appliance.dashboard.headers import unrouted_security_headers
from appliance.modes.services import services
from appliance.runtime import Runtime


class Mode(InitPluginProtocol):
    """One way of running; subclasses add their intake (``start_intake``), routes (``intake_routes``), their
    JMAP (``jmap_routes``: the local store's or the proxy to Stalwart's) and services (``providers``)."""

    name = ""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def intake_routes(self) -> list[ControllerRouterHandler]:
        """Routes only this mode serves (Stalwart's hook)."""
        return []

    def jmap_routes(self) -> list[ControllerRouterHandler]:
        """The JMAP endpoints: which server answers them is the mode's choice (the paths are the same)."""
        return []

    def providers(self) -> dict[str, Provide]:
        """Dependencies only this mode provides, besides ``services``."""
        return {}

    async def start_intake(self) -> None:
        """Start what receives mail in this mode, once the runtime runs."""

    async def stop_intake(self) -> None:
        """Stop receiving, before the runtime stops."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Mount the routes, the dependencies and the lifespan (Litestar calls this while building the app)."""
        app_config.route_handlers.extend([*agent_and_admin_routes(self.runtime.config), *self.jmap_routes(),
                                          *self.intake_routes(), *dashboard_routes(self.runtime.config)])
        app_config.template_config = template_config()  # the dashboard's pages (nothing else renders templates)
        app_config.before_send.append(unrouted_security_headers)  # /ui's 404s and 405s Litestar answers itself
        app_config.dependencies.update({**services(self.runtime), **self.providers()})
        app_config.lifespan.append(self._lifespan)
        return app_config

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        rt = self.runtime
        await rt.start()
        try:
            name = rt.config.http.metrics_token_env
            app.state.credentials = Credentials(admin_token=rt.admin_token, agent_keys=rt.agent_keys,
                                                metrics_token=os.environ.get(name, "").strip() if name else "")
            await self.start_intake()
            rt.ready = True
            yield
        finally:
            rt.ready = False
            try:
                await self.stop_intake()
            finally:
                await rt.stop()
