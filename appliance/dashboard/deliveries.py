"""The Deliveries page: webhooks that fail or died, tried again now, replayed; endpoints re-enabled.

The actions are ``appliance.delivery.manage``'s, as the admin API and the CLI call them, with the
dashboard session as the actor (``appliance.dashboard.actor``); the dispatcher is woken after each
so the attempt goes out at once. A page of deliveries is shown by status; the default view is
what needs the operator: pending ones that already failed at least once, failed (their endpoint
answered 410) and dead ones (out of retries).
"""

from __future__ import annotations

__all__ = ["deliveries_list", "delivery_page", "delivery_replay", "delivery_retry", "endpoint_enable"]

import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import quote, urlencode

import duckdb
import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from appliance.config import ApplianceConfig
from appliance.dashboard.actor import actor
from appliance.dashboard.pages import page
from appliance.dashboard.session import Session
from appliance.delivery import manage
from appliance.delivery.dispatcher import Dispatcher
from appliance.store.database import Database

View = Literal["attention", "failing", "pending", "failed", "dead", "delivered", "held", "discarded", "stream", "all"]
VIEWS: tuple[View, ...] = ("attention", "failing", "pending", "failed", "dead", "delivered", "held", "discarded",
                           "stream", "all")
"""``attention``: failing + failed + dead; ``failing``: pending after at least one failed attempt."""
Outcome = Literal["retried", "replayed", "enabled", "not-found", "refused", "not-disabled"]
_PAGE = 200
"""Deliveries shown at most per view."""
STATUS_CLASS = {"delivered": "accept", "held": "quarantine", "discarded": "drop", "stream": "drop"}
"""The stylesheet's colour (``action-<name>``) of the statuses that have none of their own."""


class DeliveriesFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the list shows, read in one go."""

    deliveries: list[manage.DeliverySummary]
    endpoints: list[manage.EndpointState]


def _urls(config: ApplianceConfig) -> dict[str, str | None]:
    return {a.address.lower(): a.webhook_url for a in config.agents}


def _listed(con: duckdb.DuckDBPyConnection, view: View, agent: str | None) -> list[manage.DeliverySummary]:
    def of(status: str | None) -> list[manage.DeliverySummary]:
        return manage.list_deliveries(con, status=status, agent=agent, limit=_PAGE)

    def failing() -> list[manage.DeliverySummary]:
        return [d for d in manage.list_deliveries(con, status="pending", agent=agent, limit=1000) if d.attempts][:_PAGE]

    if view == "failing":
        return failing()
    if view == "attention":
        rows = [*failing(), *of("failed"), *of("dead")]
        return sorted(rows, key=lambda d: d.seq, reverse=True)[:_PAGE]
    return of(None if view == "all" else view)


def _back(done: Outcome, subject: str, detail: str = "", *, to: str = "/ui/deliveries") -> Redirect:
    """Back to the page the action came from, saying what happened (POST, redirect, GET)."""
    query = {"done": done, "subject": subject, **({"detail": detail} if detail else {})}
    return Redirect(f"{to}?{urlencode(query)}", status_code=303)


def _after(delivery_id: str, back: str | None) -> str:
    return f"/ui/deliveries/{quote(delivery_id, safe='')}" if back == "delivery" else "/ui/deliveries"


@get("/deliveries", name="ui_deliveries")
async def deliveries_list(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                          status: FromQuery[View] = "attention", agent: FromQuery[str | None] = None,
                          done: FromQuery[Outcome | None] = None, subject: FromQuery[str] = "",
                          detail: FromQuery[str] = "") -> Template:
    """Deliveries of one view (default: those that need attention) and every agent's endpoint."""
    chosen = agent.strip().lower() if agent and agent.strip() else None
    urls = _urls(config)
    facts = await db.read(lambda con: DeliveriesFacts(deliveries=_listed(con, status, chosen),
                                                      endpoints=manage.endpoint_states(con, urls)))
    return page("deliveries.html", current="deliveries", title="Deliveries", facts=facts, view=status, views=VIEWS,
                agent=chosen or "", done=done, subject=subject, detail=detail, replayable=manage.REPLAYABLE,
                status_class=STATUS_CLASS)


@get("/deliveries/{delivery_id:str}", name="ui_delivery")
async def delivery_page(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                        delivery_id: FromPath[str], done: FromQuery[Outcome | None] = None,
                        subject: FromQuery[str] = "", detail: FromQuery[str] = "") -> Template:
    """One delivery: every attempt (status, latency, error), its endpoint, the event's data as stored."""
    urls = _urls(config)
    found = await db.read(lambda con: manage.get_delivery(con, delivery_id, urls))
    if found is None:
        return page("not_found.html", current="deliveries", title="Not found", status_code=404,
                    what=f"delivery {delivery_id}")
    data = msgspec.json.format(msgspec.json.encode(found.data), indent=2).decode()
    return page("delivery.html", current="deliveries", title=f"Delivery {delivery_id}", d=found, data=data,
                done=done, subject=subject, detail=detail, replayable=manage.REPLAYABLE, status_class=STATUS_CLASS)


async def _change(db: Database, dispatcher: Dispatcher, session: Session, delivery_id: str, back: str | None,
                  change: Callable[..., manage.ReplayResult], done: Outcome) -> Redirect:
    by = actor(session)
    to = _after(delivery_id, back)
    try:
        result = await db.write(lambda con: change(con, delivery_id, now=time.time(), by=by))
    except manage.DeliveryNotFound as exc:
        return _back("not-found", delivery_id, str(exc), to="/ui/deliveries")
    except (manage.NotReplayable, manage.NotRetryable) as exc:
        return _back("refused", delivery_id, str(exc), to=to)
    dispatcher.wake()
    note = "its endpoint is disabled: nothing is sent until it is enabled" if result.endpoint_disabled else ""
    return _back(done, delivery_id, note, to=to)


@post("/deliveries/{delivery_id:str}/retry", status_code=303)
async def delivery_retry(db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                         ui_session: NamedDependency[Session], delivery_id: FromPath[str],
                         back: FromQuery[str | None] = None) -> Redirect:
    """Attempt a pending delivery now instead of at its next scheduled time; audited."""
    return await _change(db, dispatcher, ui_session, delivery_id, back, manage.retry_now, "retried")


@post("/deliveries/{delivery_id:str}/replay", status_code=303)
async def delivery_replay(db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                          ui_session: NamedDependency[Session], delivery_id: FromPath[str],
                          back: FromQuery[str | None] = None) -> Redirect:
    """Send a dead or failed delivery again (same id, schedule restarted); audited."""
    return await _change(db, dispatcher, ui_session, delivery_id, back, manage.replay, "replayed")


@post("/endpoints/{agent:str}/enable", status_code=303)
async def endpoint_enable(db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                          ui_session: NamedDependency[Session], agent: FromPath[str]) -> Redirect:
    """Re-enable an agent's webhook disabled by a 410 (its pending deliveries go out again); audited."""
    by = actor(ui_session)
    address = agent.strip().lower()
    enabled = await db.write(lambda con: manage.enable_endpoint(con, address, by=by))
    if enabled:
        dispatcher.refresh_endpoints()
    return _back("enabled" if enabled else "not-disabled", address)
