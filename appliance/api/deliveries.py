"""Deliveries and webhook endpoints over HTTP (admin): list, show, replay, retry now, enable."""

from __future__ import annotations

__all__ = ["DeliveryController", "EndpointController"]

import time

import duckdb
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery

from appliance.api.auth import admin_guard
from appliance.delivery import manage
from appliance.runtime import Runtime


def _urls(runtime: Runtime) -> dict[str, str | None]:
    return {a.address.lower(): a.webhook_url for a in runtime.config.agents}


class DeliveryController(Controller):
    path = "/api/v1/deliveries"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_deliveries(self, state: State, status: FromQuery[str | None] = None,
                              agent: FromQuery[str | None] = None, event_type: FromQuery[str | None] = None,
                              before: FromQuery[int | None] = None,
                              limit: FromQuery[int] = 50) -> list[manage.DeliverySummary]:
        """Newest first; pass the last ``seq`` seen as ``before`` for the next page."""
        runtime: Runtime = state.runtime
        return await runtime.db.read(lambda con: manage.list_deliveries(
            con, status=status, agent=agent, event_type=event_type, before=before, limit=limit))

    @get("/{delivery_id:str}")
    async def show(self, state: State, delivery_id: FromPath[str]) -> manage.DeliveryDetail:
        runtime: Runtime = state.runtime
        detail = await runtime.db.read(lambda con: manage.get_delivery(con, delivery_id, _urls(runtime)))
        if detail is None:
            raise NotFoundException(f"no delivery {delivery_id}")
        return detail

    @post("/{delivery_id:str}/replay", status_code=200)
    async def replay(self, state: State, delivery_id: FromPath[str]) -> manage.ReplayResult:
        """Send a dead or failed delivery again (same id); 409 for any other status."""
        runtime: Runtime = state.runtime
        try:
            result = await runtime.db.write(
                lambda con: manage.replay(con, delivery_id, now=time.time(), by="api"))
        except manage.DeliveryNotFound as exc:
            raise NotFoundException(str(exc)) from exc
        except manage.NotReplayable as exc:
            raise ClientException(str(exc), status_code=409) from exc
        runtime.wake_dispatcher()
        return result

    @post("/{delivery_id:str}/retry", status_code=200)
    async def retry(self, state: State, delivery_id: FromPath[str]) -> manage.ReplayResult:
        """Attempt a pending delivery now instead of at its next scheduled time; 409 for any other status."""
        runtime: Runtime = state.runtime
        try:
            result = await runtime.db.write(
                lambda con: manage.retry_now(con, delivery_id, now=time.time(), by="api"))
        except manage.DeliveryNotFound as exc:
            raise NotFoundException(str(exc)) from exc
        except manage.NotRetryable as exc:
            raise ClientException(str(exc), status_code=409) from exc
        runtime.wake_dispatcher()
        return result


class EndpointController(Controller):
    path = "/api/v1/endpoints"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_endpoints(self, state: State) -> list[manage.EndpointState]:
        runtime: Runtime = state.runtime
        return await runtime.db.read(lambda con: manage.endpoint_states(con, _urls(runtime)))

    @post("/{agent:str}/enable", status_code=200)
    async def enable(self, state: State, agent: FromPath[str]) -> manage.EndpointState:
        """Re-enable a webhook disabled by a 410; its pending deliveries go out again."""
        runtime: Runtime = state.runtime
        urls = _urls(runtime)
        address = agent.strip().lower()

        def work(con: duckdb.DuckDBPyConnection) -> manage.EndpointState | None:
            manage.enable_endpoint(con, address, by="api")
            states = manage.endpoint_states(con, urls)
            return next((s for s in states if s.agent == address), None)

        state_now = await runtime.db.write(work)
        if state_now is None:
            raise NotFoundException(f"no agent {agent}")
        if runtime.dispatcher is not None:
            runtime.dispatcher.refresh_endpoints()
        return state_now
