"""``GET /metrics``: Prometheus text exposition, read from the database at scrape time.

Nothing is counted on the SMTP path: the audit and delivery tables already
hold every decision and attempt, and DuckDB counts them in milliseconds.

Scraping needs a bearer token: the admin token, or the metrics-only token in
``$<http.metrics_token_env>`` when that is configured (Prometheus'
``authorization: {credentials_file: ...}``).
"""

from __future__ import annotations

__all__ = ["metrics", "metrics_guard"]


import duckdb
from litestar import get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Response

from appliance.api.auth import bearer, credentials
from appliance.store.audit import decision_counts
from appliance.store.database import Database
from appliance.store.deliveries import delivery_counts
from appliance.store.messages import QUARANTINE, count_in_mailboxes

_CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus' text format; Litestar appends ``; charset=utf-8`` to every ``text/*`` type itself."""


def _samples(con: duckdb.DuckDBPyConnection) -> list[str]:
    lines = ["# HELP appliance_decisions_total Gate decisions recorded, by agent, action and reason.",
             "# TYPE appliance_decisions_total counter"]
    for d in decision_counts(con):
        labels = f'agent="{_esc(d.agent)}",action="{d.action}",reason="{_esc(d.reason)}"'
        lines.append(f"appliance_decisions_total{{{labels}}} {d.count}")
    lines += ["# HELP appliance_deliveries Deliveries by agent, event type and status.",
              "# TYPE appliance_deliveries gauge"]
    for c in delivery_counts(con):
        labels = f'agent="{_esc(c.agent)}",type="{c.event_type}",status="{c.status}"'
        lines.append(f"appliance_deliveries{{{labels}}} {c.count}")
    lines += ["# HELP appliance_quarantined Messages held in quarantine.", "# TYPE appliance_quarantined gauge"]
    lines.append(f"appliance_quarantined {count_in_mailboxes(con, [QUARANTINE])}")
    return lines


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """401 unless the request carries the admin token or the metrics token."""
    if not credentials(connection).may_read_metrics(bearer(connection)):
        raise NotAuthorizedException("metrics token or admin token required (Authorization: Bearer <token>)")


@get("/metrics", include_in_schema=False, media_type=_CONTENT_TYPE, guards=[metrics_guard])
async def metrics(db: NamedDependency[Database], state: State) -> Response[str]:
    """The appliance's counters, for Prometheus (and those of the parts the mode runs: Stalwart)."""
    lines = await db.read(_samples)
    for source in state.runtime.metric_sources:
        lines += source()
    lines += ["# HELP appliance_db_commits_total Write transactions committed (one per group of messages).",
              "# TYPE appliance_db_commits_total counter", f"appliance_db_commits_total {db.commits}"]
    return Response("\n".join(lines) + "\n", media_type=_CONTENT_TYPE)
