"""Kept reports in a real DuckDB file: a duplicate once, and the per-sender summary's counts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from appliance.reports import parse_report_xml
from appliance.store.database import Database
from appliance.store.reports import save_report, stored_reports, summary
from tests.reports.samples import google, microsoft

RECEIVED = datetime(2025, 1, 3, 8, 0, 0)


def test_a_report_sent_twice_is_kept_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    try:
        report = parse_report_xml(google().encode())
        assert db.write_sync(lambda con: save_report(con, report, RECEIVED)) is True
        assert db.write_sync(lambda con: save_report(con, report, RECEIVED)) is False
        kept = db.read_sync(stored_reports)
        assert [(r.org_name, r.report_id, r.records) for r in kept] == [("google.com", "10402651235457367423", 2)]
        assert db.read_sync(lambda con: con.execute("SELECT count(*) FROM dmarc_records").fetchone()) == (2,)
    finally:
        db.close()


def test_the_summary_counts_messages_per_sender_and_source(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    try:
        for text in (google(), microsoft(), google("second-google-report")):
            report = parse_report_xml(text.encode())
            db.write_sync(lambda con, report=report: save_report(con, report, RECEIVED))  # type: ignore[misc]
        rows = {r.source_ip: r for r in db.read_sync(summary)}
        assert set(rows) == {"203.0.113.5", "198.51.100.77", "2001:db8::25", "192.0.2.66"}
        good = rows["203.0.113.5"]  # in both Google reports
        assert (good.header_from, good.messages, good.dkim_pass, good.spf_pass, good.dmarc_pass) == (
            "example.test", 24, 24, 24, 24)
        assert good.dmarc_fail == 0 and good.disposition_none == 24
        bad = rows["198.51.100.77"]
        assert (bad.messages, bad.dkim_fail, bad.spf_fail, bad.dmarc_pass, bad.dmarc_fail) == (6, 6, 6, 0, 6)
        dkim_only = rows["2001:db8::25"]  # DKIM aligned, SPF not: DMARC passes
        assert (dkim_only.dkim_pass, dkim_only.spf_fail, dkim_only.dmarc_pass) == (4, 4, 4)
        quarantined = rows["192.0.2.66"]
        assert (quarantined.disposition_quarantine, quarantined.dmarc_fail) == (2, 2)
    finally:
        db.close()


def test_the_summary_since_leaves_out_older_reports(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb")
    try:
        for text in (google(), microsoft()):  # Google's ends 2025-01-01 23:59:59, Microsoft's 2025-01-03 00:00
            report = parse_report_xml(text.encode())
            db.write_sync(lambda con, report=report: save_report(con, report, RECEIVED))  # type: ignore[misc]
        recent = db.read_sync(lambda con: summary(con, datetime(2025, 1, 2)))
        assert {r.source_ip for r in recent} == {"2001:db8::25", "192.0.2.66"}
    finally:
        db.close()
