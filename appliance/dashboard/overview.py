"""The Overview page: what the gate decided hour by hour, who writes, why mail is refused."""

from __future__ import annotations

__all__ = ["OverviewFacts", "hourly_chart", "overview"]

from datetime import UTC, datetime, timedelta

import duckdb
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from appliance.dashboard.charts import BarSeries, Chart, bar_chart
from appliance.dashboard.pages import page
from appliance.store import audit as audit_rows
from appliance.store.database import Database

ACTIONS = ("accept", "quarantine", "drop", "tempfail", "bounce")
"""The gate's actions, in the chart's order (good news first)."""


class OverviewFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the Overview shows, read in one go."""

    since: datetime
    hours: list[datetime]
    per_hour: list[audit_rows.HourCount]
    senders: list[audit_rows.Tally]
    refusals: list[audit_rows.Tally]


def _read(con: duckdb.DuckDBPyConnection, now: datetime, hours: int) -> OverviewFacts:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    return OverviewFacts(since=start, hours=[start + timedelta(hours=i) for i in range(hours)],
                         per_hour=audit_rows.decisions_per_hour(con, start),
                         senders=audit_rows.top_senders(con, start), refusals=audit_rows.top_refusals(con, start))


def hourly_chart(hours: list[datetime], counts: list[audit_rows.HourCount]) -> Chart:
    """Decisions per hour, one stacked bar per hour, one colour per action (actions never seen left out)."""
    index = {hour: i for i, hour in enumerate(hours)}
    seen = {c.action for c in counts}
    series = []
    for action in [*ACTIONS, *sorted(seen - set(ACTIONS))]:
        if action not in seen:
            continue
        values: list[int | None] = [None] * len(hours)
        for c in counts:
            if c.action == action and c.hour in index:
                values[index[c.hour]] = c.count
        series.append(BarSeries(name=action, values=values))
    return bar_chart(chart_id="chart-decisions-per-hour", title="Decisions per hour (UTC)", stacked=True,
                     x_labels=[h.strftime("%H:00") for h in hours], series=series)


@get("/", name="ui_overview")
async def overview(db: NamedDependency[Database], hours: FromQuery[int] = 24) -> Template:
    """The Overview page for the last ``hours`` hours (1 to 168)."""
    hours = min(max(hours, 1), 168)
    now = datetime.now(UTC).replace(tzinfo=None)
    facts = await db.read(lambda con: _read(con, now, hours))
    chart = hourly_chart(facts.hours, facts.per_hour)
    total = sum(c.count for c in facts.per_hour)
    return page("overview.html", current="overview", title="Overview", charts=[chart], chart=chart, facts=facts,
                total=total, window=hours)
