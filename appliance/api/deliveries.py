"""Deliveries and webhook endpoints over HTTP (admin): list, show, replay, retry now, enable."""

from __future__ import annotations

__all__ = ["DeliveryController", "EndpointController"]

import time

import duckdb
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery

from appliance.api.auth import admin_guard
from appliance.config import ApplianceConfig
from appliance.delivery import manage
from appliance.delivery.dispatcher import Dispatcher
from appliance.store.database import Database


def _urls(config: ApplianceConfig) -> dict[str, str | None]:
    return {a.address.lower(): a.webhook_url for a in config.agents}


class DeliveryController(Controller):
    path = "/api/v1/deliveries"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_deliveries(self, db: NamedDependency[Database], status: FromQuery[str | None] = None,
                              agent: FromQuery[str | None] = None, event_type: FromQuery[str | None] = None,
                              before: FromQuery[int | None] = None,
                              limit: FromQuery[int] = 50) -> list[manage.DeliverySummary]:
        """Newest first; pass the last ``seq`` seen as ``before`` for the next page."""
        return await db.read(lambda con: manage.list_deliveries(
            con, status=status, agent=agent, event_type=event_type, before=before, limit=limit))

    @get("/{delivery_id:str}")
    async def show(self, db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                   delivery_id: FromPath[str]) -> manage.DeliveryDetail:
        detail = await db.read(lambda con: manage.get_delivery(con, delivery_id, _urls(config)))
        if detail is None:
            raise NotFoundException(f"no delivery {delivery_id}")
        return detail

    @post("/{delivery_id:str}/replay", status_code=200)
    async def replay(self, db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                     delivery_id: FromPath[str]) -> manage.ReplayResult:
        """Send a dead or failed delivery again (same id); 409 for any other status."""
        try:
            result = await db.write(
                lambda con: manage.replay(con, delivery_id, now=time.time(), by="api"))
        except manage.DeliveryNotFound as exc:
            raise NotFoundException(str(exc)) from exc
        except manage.NotReplayable as exc:
            raise ClientException(str(exc), status_code=409) from exc
        dispatcher.wake()
        return result

    @post("/{delivery_id:str}/retry", status_code=200)
    async def retry(self, db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                    delivery_id: FromPath[str]) -> manage.ReplayResult:
        """Attempt a pending delivery now instead of at its next scheduled time; 409 for any other status."""
        try:
            result = await db.write(
                lambda con: manage.retry_now(con, delivery_id, now=time.time(), by="api"))
        except manage.DeliveryNotFound as exc:
            raise NotFoundException(str(exc)) from exc
        except manage.NotRetryable as exc:
            raise ClientException(str(exc), status_code=409) from exc
        dispatcher.wake()
        return result


class EndpointController(Controller):
    path = "/api/v1/endpoints"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_endpoints(self, db: NamedDependency[Database],
                             config: NamedDependency[ApplianceConfig]) -> list[manage.EndpointState]:
        return await db.read(lambda con: manage.endpoint_states(con, _urls(config)))

    @post("/{agent:str}/enable", status_code=200)
    async def enable(self, db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                     dispatcher: NamedDependency[Dispatcher],
                     agent: FromPath[str]) -> manage.EndpointState:
        """Re-enable a webhook disabled by a 410; its pending deliveries go out again."""
        urls = _urls(config)
        address = agent.strip().lower()

        def work(con: duckdb.DuckDBPyConnection) -> manage.EndpointState | None:
            manage.enable_endpoint(con, address, by="api")
            states = manage.endpoint_states(con, urls)
            return next((s for s in states if s.agent == address), None)

        state_now = await db.write(work)
        if state_now is None:
            raise NotFoundException(f"no agent {agent}")
        dispatcher.refresh_endpoints()
        return state_now
