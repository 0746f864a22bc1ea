"""Taking in one message sent to the report address: read the report, keep it once, audit it.

Both intakes call ``take_report`` after ``is_report_recipient`` said yes. RFC 7489 7.2 makes reports
best effort, so a broken one is not bounced: the caller answers 250 whatever the outcome, and the
outcome (logged, and audited as ``dmarc.report_rejected``) says what was wrong.
"""

from __future__ import annotations

__all__ = ["ReportOutcome", "take_report"]

import asyncio
import logging
from typing import Literal

import duckdb
import msgspec

from appliance.audit import record_event
from appliance.reports.aggregate import AggregateReport, ReportError, ReportLimits, parse_report_message
from appliance.store import reports as report_rows
from appliance.store.database import Database, utc

log = logging.getLogger("appliance.reports")

KEPT = "dmarc.report"
"""Audit event type of a report kept."""
REJECTED = "dmarc.report_rejected"
"""Audit event type of a message to the report address that held no readable report."""


class ReportOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one message sent to the report address."""

    state: Literal["kept", "duplicate", "rejected"]
    org_name: str | None = None
    report_id: str | None = None
    domain: str | None = None
    records: int = 0
    error: str | None = None
    """Why the message was rejected (which part or element, what was wrong)."""


async def take_report(db: Database, raw: bytes, *, limits: ReportLimits | None = None) -> ReportOutcome:
    """Read the report ``raw`` carries and keep it (once); the outcome never raises for a bad report.

    A database failure does raise: the caller answers a temporary failure so the reporter retries.
    """
    try:
        # parsing a large report (decompression, XML) is CPU work: off the event loop
        report = await asyncio.to_thread(parse_report_message, raw, limits)
    except ReportError as exc:
        error = str(exc)
        log.warning("a message to the DMARC report address holds no readable report: %s", error)
        await db.write(lambda con: record_event(con, REJECTED, None, error[:1000]))
        return ReportOutcome(state="rejected", error=error)
    kept = await db.write(lambda con: _keep(con, report))
    meta = report.metadata
    outcome = ReportOutcome(state="kept" if kept else "duplicate", org_name=meta.org_name,
                            report_id=meta.report_id, domain=report.policy.domain, records=len(report.rows))
    log.info("DMARC report %s from %s for %s (%d record(s)): %s", meta.report_id, meta.org_name,
             report.policy.domain, len(report.rows), outcome.state)
    return outcome


def _keep(con: duckdb.DuckDBPyConnection, report: AggregateReport) -> bool:
    if not report_rows.save_report(con, report, utc()):
        return False
    meta = report.metadata
    messages = sum(r.count for r in report.rows)
    record_event(con, KEPT, None, f"{meta.org_name} report {meta.report_id} for {report.policy.domain}, "
                                  f"{meta.begin:%Y-%m-%d %H:%M} to {meta.end:%Y-%m-%d %H:%M} UTC: "
                                  f"{len(report.rows)} record(s), {messages} message(s)")
    return True
