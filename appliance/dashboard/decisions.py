"""The Decisions pages: a filtered, paged table of the gate's decisions, and one decision in full.

One decision's page shows its trace (``trace.recorded_trace``), its authentication results and
capabilities, the message as ``message.view_message`` reads it (its HTML only inside a sandboxed
frame, ``/ui/decisions/{id}/html``), the deliveries it made and what the agent sent in its thread
after it.
"""

from __future__ import annotations

__all__ = ["DecisionFilters", "decision_message_html", "decision_page", "decisions_list", "parse_filters"]

from datetime import UTC, datetime
from urllib.parse import urlencode

import anyio.to_thread
import duckdb
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Response, Template

from appliance.config import ApplianceConfig
from appliance.dashboard.headers import MESSAGE_CSP
from appliance.dashboard.message import MessageView, view_message
from appliance.dashboard.overview import ACTIONS
from appliance.dashboard.pages import page
from appliance.dashboard.trace import deciding_step, recorded_trace
from appliance.gate.sender import rule_key
from appliance.policy.book import PolicyBook
from appliance.store import audit as audit_rows
from appliance.store.database import Database
from appliance.store.deliveries import DeliveryRecord, deliveries_of_decision
from appliance.store.evidence import refused_raws
from appliance.store.messages import StoredMessage, message_of_decision
from appliance.store.outbound import SentReply, sent_in_thread

PAGE_SIZE = 50


class DecisionFilters(msgspec.Struct, frozen=True, kw_only=True):
    """The filter form as the operator filled it in (strings, shown back as typed)."""

    agent: str = ""
    sender: str = ""
    action: str = ""
    reason: str = ""
    since: str = ""
    until: str = ""
    q: str = ""

    def query_string(self, **extra: str | int) -> str:
        """The filters (and ``extra``) as a URL query, for the pager's links."""
        values = {k: v for k, v in msgspec.structs.asdict(self).items() if v}
        return urlencode({**values, **{k: str(v) for k, v in extra.items()}})


def _moment(value: str, field: str, problems: list[str]) -> datetime | None:
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        # an offset can carry a time past year 1 or 9999 in UTC: OverflowError, a problem, not a 500
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    except (ValueError, OverflowError):
        problems.append(f"{field}: expected a date and time such as 2026-12-03T14:00 (UTC), got {value!r}")
        return None


def parse_filters(filters: DecisionFilters, before: int | None) -> tuple[audit_rows.DecisionQuery, list[str]]:
    """The store's query for the form's filters (times in UTC), and what could not be understood."""
    problems: list[str] = []
    query = audit_rows.DecisionQuery(
        agent=filters.agent or None, sender=filters.sender or None, action=filters.action or None,
        reason=filters.reason or None, since=_moment(filters.since, "since", problems),
        until=_moment(filters.until, "until", problems), text=filters.q or None, before=before,
        limit=PAGE_SIZE + 1)
    return query, problems


class _ListFacts(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[audit_rows.DecisionRow]
    reasons: list[str]


@get("/decisions", name="ui_decisions")
async def decisions_list(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                         agent: FromQuery[str] = "", sender: FromQuery[str] = "", action: FromQuery[str] = "",
                         reason: FromQuery[str] = "", since: FromQuery[str] = "", until: FromQuery[str] = "",
                         q: FromQuery[str] = "", before: FromQuery[int | None] = None) -> Template:
    """Decisions, newest first, ``PAGE_SIZE`` a page; ``before`` is the last seq of the previous page."""
    filters = DecisionFilters(agent=agent, sender=sender, action=action, reason=reason, since=since, until=until,
                              q=q)
    query, problems = parse_filters(filters, before)

    def read(con: duckdb.DuckDBPyConnection) -> _ListFacts:
        rows = audit_rows.find_decisions(con, query) if not problems else []
        return _ListFacts(rows=rows, reasons=audit_rows.decision_reasons(con))

    facts = await db.read(read)
    rows = facts.rows[:PAGE_SIZE]
    more = len(facts.rows) > PAGE_SIZE
    next_page = f"/ui/decisions?{filters.query_string(before=rows[-1].seq)}" if more and rows else ""
    return page("decisions.html", current="decisions", title="Decisions", rows=rows, filters=filters,
                problems=problems, next_page=next_page, paged=before is not None,
                first_page=f"/ui/decisions?{filters.query_string()}",
                agents=[a.address for a in config.agents], actions=ACTIONS, reasons=facts.reasons)


class _DecisionFacts(msgspec.Struct, frozen=True, kw_only=True):
    row: audit_rows.DecisionRow
    message: StoredMessage | None
    refused_raw: bytes | None
    """A refused message's bytes, while ``[retention] refused_raw_days`` keeps them (for replay)."""
    deliveries: list[DeliveryRecord]
    replies: list[SentReply]


def _read_decision(con: duckdb.DuckDBPyConnection, decision_id: str) -> _DecisionFacts | None:
    row = audit_rows.decision_row(con, decision_id)
    if row is None:
        return None
    replies = (sent_in_thread(con, row.agent, row.thread_id, since=row.ts)
               if row.thread_id and row.intake != "outbound" else [])
    message = message_of_decision(con, decision_id)
    refused = refused_raws(con, [decision_id]).get(decision_id) if message is None else None
    return _DecisionFacts(row=row, message=message, refused_raw=refused,
                          deliveries=deliveries_of_decision(con, decision_id), replies=replies)


def _raw_of(con: duckdb.DuckDBPyConnection, decision_id: str) -> bytes | None:
    """The bytes to show for a decision: the stored copy, else a refused message's kept bytes."""
    stored = message_of_decision(con, decision_id)
    return stored.raw if stored is not None else refused_raws(con, [decision_id]).get(decision_id)


def _rule_label(policies: PolicyBook, row: audit_rows.DecisionRow) -> str:
    """The matched rule as the current policy words it ("" when none matched or the policy changed shape)."""
    policy = policies.get(row.agent)
    if row.rule is None or policy is None or not 0 <= row.rule < len(policy.senders):
        return ""
    return rule_key(policy.senders[row.rule].match)


@get("/decisions/{decision_id:str}", name="ui_decision")
async def decision_page(decision_id: FromPath[str], db: NamedDependency[Database],
                        policies: NamedDependency[PolicyBook]) -> Template:
    """One decision: trace, auth, capabilities, the message, its deliveries and replies."""
    facts = await db.read(lambda con: _read_decision(con, decision_id))
    if facts is None:
        return page("not_found.html", current="decisions", title="Not found", status_code=404,
                    what=f"decision {decision_id}")
    view: MessageView | None = None
    raw = facts.message.raw if facts.message is not None else facts.refused_raw
    if raw is not None:
        view = await anyio.to_thread.run_sync(view_message, raw)
    row = facts.row
    return page("decision.html", current="decisions", title=f"Decision {row.decision_id}", row=row,
                trace=recorded_trace(row), decider=deciding_step(row), rule_label=_rule_label(policies, row),
                message=facts.message, view=view, deliveries=facts.deliveries, replies=facts.replies)


_FRAME = """<!doctype html><html><head><meta charset="utf-8"><title>message</title></head><body>{}</body></html>"""


@get("/decisions/{decision_id:str}/html", name="ui_decision_html")
async def decision_message_html(decision_id: FromPath[str], db: NamedDependency[Database]) -> Response[str]:
    """The message's HTML, sanitized, as a document of its own under ``MESSAGE_CSP`` (for the sandboxed frame)."""
    raw = await db.read(lambda con: _raw_of(con, decision_id))
    body = ""
    if raw is not None:
        body = (await anyio.to_thread.run_sync(view_message, raw)).html
    return Response(_FRAME.format(body), media_type="text/html", status_code=200 if raw is not None else 404,
                    headers={"content-security-policy": MESSAGE_CSP})
