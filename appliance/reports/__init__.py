"""DMARC aggregate reports (RFC 7489 7.2, appendix C) sent to the ``rua`` address our DNS publishes."""

from appliance.reports.aggregate import (
    AggregateReport,
    AuthDkim,
    AuthSpf,
    PolicyPublished,
    ReportError,
    ReportLimits,
    ReportMetadata,
    ReportRow,
    parse_report_message,
    parse_report_xml,
)
from appliance.reports.intake import ReportOutcome, take_report
from appliance.reports.recipient import is_report_recipient, report_recipient

__all__ = [
    "AggregateReport",
    "AuthDkim",
    "AuthSpf",
    "PolicyPublished",
    "ReportError",
    "ReportLimits",
    "ReportMetadata",
    "ReportOutcome",
    "ReportRow",
    "is_report_recipient",
    "parse_report_message",
    "parse_report_xml",
    "report_recipient",
    "take_report",
]
