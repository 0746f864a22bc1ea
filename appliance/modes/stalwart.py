"""Stalwart mode: Stalwart is the MTA and calls the gate through its MTA hook (``POST /hooks/mta``);
the appliance runs no SMTP server of its own."""

from __future__ import annotations

__all__ = ["StalwartMode"]

from litestar.types import ControllerRouterHandler

from appliance.api.hook import hook_router
from appliance.modes.mode import Mode


class StalwartMode(Mode):
    """The MTA hook in front of the runtime."""

    name = "stalwart"

    def intake_routes(self) -> list[ControllerRouterHandler]:
        return [hook_router(self.runtime.config)]
