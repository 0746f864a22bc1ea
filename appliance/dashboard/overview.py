"""The Overview page: what the gate decided hour by hour, who writes, why mail is refused, whether
deliveries reach the agents, what the agents sent and spent against their budgets, and the state
of Stalwart and of the domains' DNS records."""

from __future__ import annotations

__all__ = ["ACTIONS", "Budgeted", "OverviewFacts", "delivery_chart", "hourly_chart", "overview", "with_budgets"]

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Literal

import duckdb
import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from appliance.dashboard.charts import BarSeries, Chart, bar_chart
from appliance.dashboard.pages import page
from appliance.domains.verify import DomainCheck
from appliance.gate.limits import DAY
from appliance.gate.sender import rule_key
from appliance.policy.book import PolicyBook
from appliance.runtime import PartHealth, Runtime
from appliance.store import audit as audit_rows
from appliance.store import deliveries as delivery_rows
from appliance.store import domains as domain_rows
from appliance.store import limits as limit_rows
from appliance.store import outbound as outbound_rows
from appliance.store.database import Database

ACTIONS = ("accept", "quarantine", "drop", "tempfail", "bounce")
"""The gate's actions, in the chart's order (good news first)."""
DELIVERY_STATUSES = ("delivered", "stream", "pending", "awaiting", "held", "dead", "failed")
"""Delivery statuses in the chart's order; any other status found is added after them."""


class Budgeted(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens charged to a thread or to an agent's sender rule, and the budget that applies (None: none)."""

    agent: str
    subject: str
    tokens: int
    budget: int | None
    rule: str = ""
    """The sender rule's key (the day budget is per rule)."""


class DomainState(msgspec.Struct, frozen=True, kw_only=True):
    """A mail domain and its latest DNS check (None before the first)."""

    name: str
    check: DomainCheck | None


class OverviewFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the Overview shows, read from the database in one go."""

    since: datetime
    hours: list[datetime]
    per_hour: list[audit_rows.HourCount]
    senders: list[audit_rows.Tally]
    refusals: list[audit_rows.Tally]
    deliveries: list[delivery_rows.DeliveryCount]
    disabled: list[delivery_rows.DisabledEndpoint]
    sent: list[outbound_rows.SentCount]
    thread_spend: list[limit_rows.TokenSpend]
    thread_rules: dict[str, int | None]
    """``agent|thread`` -> the sender rule that admitted the thread (its per-thread budget applies)."""
    day_spend: list[limit_rows.TokenSpend]
    domains: list[DomainState]


def _read(con: duckdb.DuckDBPyConnection, now: datetime, hours: int) -> OverviewFacts:
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    unix_start = start.replace(tzinfo=UTC).timestamp()
    threads = limit_rows.token_spend(con, "thread", since=0.0, limit=10)  # a thread's budget is for its lifetime
    rules = {}
    for spend in threads:
        admitted = audit_rows.last_admission(con, spend.agent, spend.subject)
        rules[f"{spend.agent}|{spend.subject}"] = admitted.rule if admitted is not None else None
    domains = [DomainState(name=d.name, check=next(iter(domain_rows.check_history(con, d.name, limit=1)), None))
               for d in domain_rows.list_domains(con)]
    return OverviewFacts(
        since=start, hours=[start + timedelta(hours=i) for i in range(hours)],
        per_hour=audit_rows.decisions_per_hour(con, start), senders=audit_rows.top_senders(con, start),
        refusals=audit_rows.top_refusals(con, start), deliveries=delivery_rows.delivery_counts(con),
        disabled=delivery_rows.disabled_endpoints(con), sent=outbound_rows.outbound_counts(con, since=unix_start),
        thread_spend=threads, thread_rules=rules,
        day_spend=limit_rows.token_spend(con, "day", since=time.time() - DAY, limit=20), domains=domains)


def with_budgets(facts: OverviewFacts, policies: PolicyBook, kind: Literal["thread", "day"]) -> list[Budgeted]:
    """Token spend beside the budget the agent's current policy sets for it (per thread, or per rule and day)."""
    out = []
    if kind == "thread":
        for spend in facts.thread_spend:
            policy, rule = policies.get(spend.agent), facts.thread_rules.get(f"{spend.agent}|{spend.subject}")
            sender = policy.senders[rule] if policy is not None and rule is not None and rule < len(policy.senders) \
                else None
            budget = sender.token_budget.per_thread if sender is not None and sender.token_budget else None
            out.append(Budgeted(agent=spend.agent, subject=spend.subject, tokens=spend.tokens, budget=budget,
                                rule=rule_key(sender.match) if sender is not None else ""))
        return out
    for spend in facts.day_spend:
        policy = policies.get(spend.agent)
        match = next((s for s in policy.senders if rule_key(s.match) == spend.subject), None) if policy else None
        budget = match.token_budget.per_day if match is not None and match.token_budget else None
        out.append(Budgeted(agent=spend.agent, subject=spend.subject, tokens=spend.tokens, budget=budget,
                            rule=spend.subject))
    return out


def hourly_chart(hours: list[datetime], counts: list[audit_rows.HourCount]) -> Chart:
    """Decisions per hour, one stacked bar per hour, one colour per action (actions never seen left out)."""
    index = {hour: i for i, hour in enumerate(hours)}
    seen = {c.action for c in counts}
    series = []
    for action in [a for a in ACTIONS if a in seen] + sorted(seen - set(ACTIONS)):
        values: list[int | None] = [None] * len(hours)
        for c in counts:
            if c.action == action and c.hour in index:
                values[index[c.hour]] = c.count
        series.append(BarSeries(name=action, values=values))
    return bar_chart(chart_id="chart-decisions-per-hour", title="Decisions per hour (UTC)", stacked=True,
                     x_labels=[h.strftime("%H:00" if len(hours) <= 24 else "%m-%d %H:00") for h in hours],
                     series=series)


def delivery_chart(counts: list[delivery_rows.DeliveryCount]) -> Chart:
    """Deliveries per agent by status (every event type), one horizontal stacked bar per agent."""
    agents = sorted({c.agent for c in counts})
    seen = {c.status for c in counts}
    series = []
    for status in [s for s in DELIVERY_STATUSES if s in seen] + sorted(seen - set(DELIVERY_STATUSES)):
        values: list[int | None] = [sum(c.count for c in counts if c.agent == a and c.status == status) or None
                                    for a in agents]
        series.append(BarSeries(name=status, values=values))
    return bar_chart(chart_id="chart-delivery-health", title="Deliveries by status", stacked=True, horizontal=True,
                     x_labels=agents, series=series, width=480, height=max(200, 110 + 36 * len(agents)))


@get("/", name="ui_overview")
async def overview(db: NamedDependency[Database], policies: NamedDependency[PolicyBook], state: State,
                   hours: FromQuery[int] = 24) -> Template:
    """The Overview page for the last ``hours`` hours (1 to 168)."""
    hours = min(max(hours, 1), 168)
    now = datetime.now(UTC).replace(tzinfo=None)
    facts = await db.read(lambda con: _read(con, now, hours))
    runtime: Runtime = state.runtime  # the parts' health, as /healthz reads it
    parts: dict[str, PartHealth] = {name: check() for name, check in runtime.checks.items()}
    decisions, deliveries = hourly_chart(facts.hours, facts.per_hour), delivery_chart(facts.deliveries)
    charts = [decisions, deliveries] if facts.deliveries else [decisions]
    return page("overview.html", current="overview", title="Overview", charts=charts, chart=decisions,
                delivery_chart=deliveries if facts.deliveries else None, facts=facts, window=hours,
                total=sum(c.count for c in facts.per_hour),
                delivery_totals=_totals((c.status, c.count) for c in facts.deliveries),
                sent_totals=_totals((c.status, c.jobs) for c in facts.sent),
                threads=with_budgets(facts, policies, "thread"), days=with_budgets(facts, policies, "day"),
                parts=parts, ready=runtime.ready)


def _totals(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for key, n in pairs:
        totals[key] = totals.get(key, 0) + n
    return totals
