"""Quarantine review over HTTP (admin): list, show, release, delete."""

from __future__ import annotations

__all__ = ["QuarantineController"]

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, QueryParameter

from appliance.api.auth import admin_guard
from appliance.delivery.dispatcher import Dispatcher
from appliance.inbound import quarantine
from appliance.store.database import Database
from appliance.store.messages import MessageSummary

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
"""How many rows a page holds: 1 to 1000 (anything else is a 400, not a database error)."""


class QuarantineController(Controller):
    path = "/api/v1/quarantine"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_held(self, db: NamedDependency[Database], agent: FromQuery[str | None] = None,
                        limit: Limit = 100) -> list[MessageSummary]:
        return await db.read(lambda con: quarantine.list_held(con, agent, limit))

    @get("/{email_id:str}")
    async def show(self, db: NamedDependency[Database], email_id: FromPath[str]) -> quarantine.HeldMessage:
        held = await db.read(lambda con: quarantine.show(con, email_id))
        if held is None:
            raise NotFoundException(f"no quarantined message {email_id}")
        return held

    @post("/{email_id:str}/release", status_code=200)
    async def release(self, db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                      email_id: FromPath[str]) -> dict[str, str]:
        if not await db.write(lambda con: quarantine.release(con, email_id, by="api")):
            raise NotFoundException(f"no quarantined message {email_id}")
        dispatcher.wake()
        return {"released": email_id}

    @delete("/{email_id:str}", status_code=200)
    async def delete(self, db: NamedDependency[Database], email_id: FromPath[str]) -> dict[str, str]:
        if not await db.write(lambda con: quarantine.delete(con, email_id, by="api")):
            raise NotFoundException(f"no quarantined message {email_id}")
        return {"deleted": email_id}
