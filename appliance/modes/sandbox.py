"""Sandbox mode: the appliance is the MTA. Its own SMTP server takes mail for the agents; the local store
keeps it; no MTA hook is served."""

from __future__ import annotations

__all__ = ["SandboxMode"]

from litestar.types import ControllerRouterHandler

from appliance.api.jmap import jmap_router
from appliance.inbound.smtp import SmtpServer, start_smtp_server
from appliance.modes.mode import Mode


class SandboxMode(Mode):
    """The embedded SMTP server in front of the runtime."""

    name = "sandbox"
    smtp_server: SmtpServer | None = None

    def jmap_routes(self) -> list[ControllerRouterHandler]:
        """The local JMAP server over our own store."""
        return [jmap_router(self.runtime.config)]

    async def start_intake(self) -> None:
        config = self.runtime.config
        self.smtp_server = await start_smtp_server(config.smtp, self.runtime.reception, hostname=config.hostname,
                                                   reports=config)  # the DMARC report address too

    async def stop_intake(self) -> None:
        if self.smtp_server is not None:
            await self.smtp_server.stop()
            self.smtp_server = None
