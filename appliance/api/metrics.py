"""``GET /metrics``: Prometheus text exposition, read from the database at scrape time.

Nothing is counted on the SMTP path: the audit and delivery tables already
hold every decision and attempt, and DuckDB counts them in milliseconds.

Scraping needs a bearer token: the admin token, or the metrics-only token in
``$<http.metrics_token_env>`` when that is configured (Prometheus'
``authorization: {credentials_file: ...}``).
"""

from __future__ import annotations

__all__ = ["metrics", "metrics_guard"]

import hmac
import os

import duckdb
from litestar import get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Response

from appliance.api.auth import bearer
from appliance.runtime import Runtime

_CONTENT_TYPE = "text/plain; version=0.0.4"
"""Prometheus' text format; Litestar appends ``; charset=utf-8`` to every ``text/*`` type itself."""


def _samples(con: duckdb.DuckDBPyConnection) -> list[str]:
    lines = ["# HELP appliance_decisions_total Gate decisions recorded, by agent, action and reason.",
             "# TYPE appliance_decisions_total counter"]
    for agent, action, reason, n in con.execute(
            "SELECT agent, action, coalesce(reason, ''), count(*) FROM decisions GROUP BY ALL ORDER BY ALL").fetchall():
        labels = f'agent="{_esc(agent)}",action="{action}",reason="{_esc(reason)}"'
        lines.append(f"appliance_decisions_total{{{labels}}} {n}")
    lines += ["# HELP appliance_deliveries Deliveries by agent, event type and status.",
              "# TYPE appliance_deliveries gauge"]
    for agent, event_type, status, n in con.execute(
            "SELECT agent, event_type, status, count(*) FROM deliveries GROUP BY ALL ORDER BY ALL").fetchall():
        lines.append(f'appliance_deliveries{{agent="{_esc(agent)}",type="{event_type}",status="{status}"}} {n}')
    lines += ["# HELP appliance_quarantined Messages held in quarantine.", "# TYPE appliance_quarantined gauge"]
    held = con.execute("SELECT count(*) FROM messages WHERE mailbox = 'quarantine'").fetchone()
    lines.append(f"appliance_quarantined {held[0] if held else 0}")
    return lines


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """401 unless the request carries the admin token or the metrics token."""
    runtime: Runtime = connection.app.state.runtime
    given = bearer(connection).encode()
    allowed = [runtime.admin_token]
    name = runtime.config.http.metrics_token_env
    if name and os.environ.get(name, "").strip():
        allowed.append(os.environ[name].strip())
    # every candidate is compared (no early exit), and an empty token never matches
    matches = [hmac.compare_digest(given, token.encode()) for token in allowed if token]
    if not given or not any(matches):
        raise NotAuthorizedException("metrics token or admin token required (Authorization: Bearer <token>)")


@get("/metrics", include_in_schema=False, media_type=_CONTENT_TYPE, guards=[metrics_guard])
async def metrics(state: State) -> Response[str]:
    """The appliance's counters, for Prometheus."""
    runtime: Runtime = state.runtime
    lines = await runtime.db.read(_samples)
    lines += ["# HELP appliance_db_commits_total Write transactions committed (one per group of messages).",
              "# TYPE appliance_db_commits_total counter", f"appliance_db_commits_total {runtime.db.commits}"]
    return Response("\n".join(lines) + "\n", media_type=_CONTENT_TYPE)
