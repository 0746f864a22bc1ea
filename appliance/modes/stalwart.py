"""Stalwart mode: Stalwart is the MTA and calls the gate through its MTA hook (``POST /hooks/mta``);
the appliance runs no SMTP server of its own, and its JMAP endpoints forward to Stalwart's JMAP
(``appliance.jmap.proxy``), where the mail lives."""

from __future__ import annotations

__all__ = ["StalwartMode"]

from typing import TYPE_CHECKING

import httpx
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ServiceUnavailableException
from litestar.types import ControllerRouterHandler

from appliance.api.hook import hook_router
from appliance.api.jmap import jmap_router
from appliance.api.jmap_proxy import jmap_proxy_router
from appliance.jmap.proxy import JmapProxy, SessionCache, Upstream, upstream_from_config
from appliance.jmap.service import for_runtime
from appliance.modes.mode import Mode
from appliance.runtime import PartHealth, Runtime
from appliance.store.database import Database
from appliance.store.stalwart import stalwart_keys

if TYPE_CHECKING:
    from appliance.stalwart.server import StalwartServer
    from appliance.stalwart.supervisor import SupervisorState


class StalwartMode(Mode):
    """The MTA hook in front of the runtime; JMAP forwarded to Stalwart; Stalwart itself supervised,
    configured and followed (``appliance.stalwart.server``) unless ``[stalwart] manage = false``."""

    name = "stalwart"
    client: httpx.AsyncClient | None = None
    upstream: Upstream | None = None
    server: StalwartServer | None = None

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.sessions = SessionCache()  # upstream Sessions outlive requests (and restarts: they are Stalwart's)

    @property
    def proxied(self) -> bool:
        """Whether Stalwart's JMAP is configured. ``load_config`` refuses stalwart mode without it; a
        configuration built without the loader (tests') keeps the local store's JMAP instead."""
        return bool(self.runtime.config.stalwart.jmap_url)

    def intake_routes(self) -> list[ControllerRouterHandler]:
        return [hook_router(self.runtime.config)]

    def jmap_routes(self) -> list[ControllerRouterHandler]:
        """The proxy to Stalwart's JMAP, on the local server's paths."""
        config = self.runtime.config
        return [jmap_proxy_router(config) if self.proxied else jmap_router(config)]

    def providers(self) -> dict[str, Provide]:
        """``jmap_proxy``: the proxy over the running appliance (503 until it runs)."""

        def jmap_proxy(state: State) -> JmapProxy:
            running = isinstance(getattr(self.runtime, "db", None), Database)
            if self.client is None or self.upstream is None or not running:
                raise ServiceUnavailableException("the appliance is starting (the JMAP proxy is not running yet)")
            return JmapProxy(self.client, self.upstream, for_runtime(state), self.sessions)

        return {"jmap_proxy": Provide(jmap_proxy, sync_to_thread=False)} if self.proxied else {}

    async def start_intake(self) -> None:
        if not self.proxied:
            return
        rt = self.runtime
        provisioned: dict[str, str] = {}
        if rt.config.stalwart.manage:
            from appliance.stalwart.server import StalwartServer  # the supervisor (and docker) only here

            self.server = server = StalwartServer(rt)
            await server.start()
            if server.supervisor is not None:
                supervisor = server.supervisor
                rt.checks["stalwart"] = lambda: _health(supervisor.state())
            rt.metric_sources.append(server.metrics)
            provisioned = {k.agent: k.secret for k in await rt.db.read(stalwart_keys)}
        self.upstream = upstream_from_config(rt.config, provisioned=provisioned)  # secrets read once, at start
        self.client = httpx.AsyncClient(timeout=self.upstream.timeout)

    async def stop_intake(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.server is not None:
            await self.server.stop()
            self.server = None


def _health(state: SupervisorState) -> PartHealth:
    return PartHealth(ok=state.status == "ready", status=state.status)
