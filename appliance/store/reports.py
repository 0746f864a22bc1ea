"""DMARC aggregate reports as kept: one row per report (once, however often it is sent) and its record rows.

The statements only: ``appliance.reports`` reads the reports and decides what is kept.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "SenderSummary", "StoredReport", "save_report", "stored_reports", "summary"]

from datetime import datetime

import duckdb
import msgspec

from appliance.reports.aggregate import AggregateReport
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("dmarc_reports", "dmarc_records"),
    ddl=(
        # One row per aggregate report; a reporter's report_id is unique to it (RFC 7489 appendix C),
        # so a report sent twice is kept once.
        """CREATE TABLE IF NOT EXISTS dmarc_reports (
        org_name VARCHAR NOT NULL,
        report_id VARCHAR NOT NULL,
        email VARCHAR NOT NULL,
        begin_at TIMESTAMP NOT NULL,
        end_at TIMESTAMP NOT NULL,
        domain VARCHAR NOT NULL,
        adkim VARCHAR,
        aspf VARCHAR,
        p VARCHAR NOT NULL,
        sp VARCHAR,
        pct INTEGER,
        received_at TIMESTAMP NOT NULL,
        PRIMARY KEY (org_name, report_id)
    )""",
        # One row per report record: ``count`` messages from ``source_ip`` claiming ``header_from``.
        """CREATE TABLE IF NOT EXISTS dmarc_records (
        org_name VARCHAR NOT NULL,
        report_id VARCHAR NOT NULL,
        source_ip VARCHAR NOT NULL,
        count BIGINT NOT NULL,
        disposition VARCHAR NOT NULL,
        dkim VARCHAR NOT NULL,
        spf VARCHAR NOT NULL,
        header_from VARCHAR NOT NULL,
        envelope_from VARCHAR,
        dkim_results STRUCT(domain VARCHAR, result VARCHAR, selector VARCHAR)[],
        spf_results STRUCT(domain VARCHAR, result VARCHAR)[]
    )""",
    ),
)


class StoredReport(msgspec.Struct, frozen=True, kw_only=True):
    """A kept report's header: who sent it, for which domain and period, how many records."""

    org_name: str
    report_id: str
    domain: str
    begin: datetime
    end: datetime
    records: int
    received_at: datetime


class SenderSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What reporters saw of mail claiming ``header_from`` from ``source_ip``: counts of messages."""

    header_from: str
    source_ip: str
    messages: int
    dkim_pass: int
    dkim_fail: int
    spf_pass: int
    spf_fail: int
    dmarc_pass: int
    """Messages with an aligned DKIM or SPF pass (RFC 7489 4.2)."""
    dmarc_fail: int
    disposition_none: int
    disposition_quarantine: int
    disposition_reject: int


def save_report(con: duckdb.DuckDBPyConnection, report: AggregateReport, received_at: datetime) -> bool:
    """Keep ``report`` with its records; False (and nothing written) when the same report is already kept."""
    meta, policy = report.metadata, report.policy
    known = con.execute("SELECT 1 FROM dmarc_reports WHERE org_name = ? AND report_id = ?",
                        [meta.org_name, meta.report_id]).fetchone()
    if known is not None:
        return False
    con.execute("INSERT INTO dmarc_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [meta.org_name, meta.report_id, meta.email, meta.begin, meta.end, policy.domain, policy.adkim,
                 policy.aspf, policy.p, policy.sp, policy.pct, received_at])
    if report.rows:
        con.executemany(
            "INSERT INTO dmarc_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[meta.org_name, meta.report_id, r.source_ip, r.count, r.disposition, r.dkim, r.spf, r.header_from,
              r.envelope_from,
              [{"domain": d.domain, "result": d.result, "selector": d.selector} for d in r.dkim_results],
              [{"domain": s.domain, "result": s.result} for s in r.spf_results]]
             for r in report.rows])
    return True


def stored_reports(con: duckdb.DuckDBPyConnection) -> list[StoredReport]:
    """Every kept report, newest period first."""
    rows = con.execute(
        "SELECT r.org_name, r.report_id, r.domain, r.begin_at, r.end_at, "
        "(SELECT count(*) FROM dmarc_records d WHERE d.org_name = r.org_name AND d.report_id = r.report_id), "
        "r.received_at FROM dmarc_reports r ORDER BY r.end_at DESC, r.org_name, r.report_id").fetchall()
    return [StoredReport(org_name=r[0], report_id=r[1], domain=r[2], begin=r[3], end=r[4], records=int(r[5]),
                         received_at=r[6]) for r in rows]


def summary(con: duckdb.DuckDBPyConnection, since: datetime | None = None) -> list[SenderSummary]:
    """Per ``header_from`` domain and source IP, over the reports whose period ends at or after ``since``."""
    rows = con.execute(
        """SELECT d.header_from, d.source_ip, sum(d.count),
               sum(d.count) FILTER (WHERE d.dkim = 'pass'), sum(d.count) FILTER (WHERE d.dkim = 'fail'),
               sum(d.count) FILTER (WHERE d.spf = 'pass'), sum(d.count) FILTER (WHERE d.spf = 'fail'),
               sum(d.count) FILTER (WHERE d.dkim = 'pass' OR d.spf = 'pass'),
               sum(d.count) FILTER (WHERE d.dkim <> 'pass' AND d.spf <> 'pass'),
               sum(d.count) FILTER (WHERE d.disposition = 'none'),
               sum(d.count) FILTER (WHERE d.disposition = 'quarantine'),
               sum(d.count) FILTER (WHERE d.disposition = 'reject')
           FROM dmarc_records d JOIN dmarc_reports r USING (org_name, report_id)
           WHERE ? IS NULL OR r.end_at >= ?
           GROUP BY d.header_from, d.source_ip
           ORDER BY d.header_from, sum(d.count) DESC, d.source_ip""", [since, since]).fetchall()
    return [SenderSummary(header_from=r[0], source_ip=r[1], messages=int(r[2] or 0), dkim_pass=int(r[3] or 0),
                          dkim_fail=int(r[4] or 0), spf_pass=int(r[5] or 0), spf_fail=int(r[6] or 0),
                          dmarc_pass=int(r[7] or 0), dmarc_fail=int(r[8] or 0), disposition_none=int(r[9] or 0),
                          disposition_quarantine=int(r[10] or 0), disposition_reject=int(r[11] or 0))
            for r in rows]
