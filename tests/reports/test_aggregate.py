"""Reading aggregate reports out of their messages: formats, namespaces, bombs, hostile XML, bad values."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import datetime

import pytest

from appliance.reports import ReportError, ReportLimits, parse_report_message, parse_report_xml
from tests.reports.samples import NAMESPACED, google, gzipped, microsoft, report_message, zipped


def test_a_google_style_zip_report_is_read_whole() -> None:
    raw = report_message(zipped(google().encode()), "application/zip", filename="google.com!example.test.zip")
    report = parse_report_message(raw)
    assert report.metadata.org_name == "google.com"
    assert report.metadata.report_id == "10402651235457367423"
    assert report.metadata.begin == datetime(2025, 1, 1, 0, 0, 0)
    assert report.metadata.end == datetime(2025, 1, 1, 23, 59, 59)
    assert (report.policy.domain, report.policy.p, report.policy.adkim, report.policy.pct) == (
        "example.test", "none", "r", 100)
    first, second = report.rows
    assert (first.source_ip, first.count, first.dkim, first.spf, first.disposition) == (
        "203.0.113.5", 12, "pass", "pass", "none")
    assert first.dkim_results[0].selector == "appliance-rsa"
    assert second.spf_results[0].domain == "spammer.example" and second.spf_results[0].result == "softfail"
    assert second.dkim_results == ()


def test_a_microsoft_style_gzip_report_is_read_with_envelope_from_and_ipv6() -> None:
    raw = report_message(gzipped(microsoft().encode()), "application/gzip")
    report = parse_report_message(raw)
    assert report.metadata.org_name == "Enterprise Outlook"
    assert report.policy.p == "quarantine" and report.policy.aspf == "s"
    assert report.rows[0].source_ip == "2001:db8::25"
    assert report.rows[0].envelope_from == "bounce.example.test"
    assert report.rows[1].disposition == "quarantine"


@pytest.mark.parametrize("content_type", ["application/x-gzip", "application/octet-stream"])
def test_x_gzip_and_a_gz_named_octet_stream_are_reports_too(content_type: str) -> None:
    raw = report_message(gzipped(google().encode()), content_type, filename="google.com!example.test.xml.gz")
    assert len(parse_report_message(raw).rows) == 2


def test_a_plain_xml_body_is_read() -> None:
    raw = report_message(google().encode(), "text/xml", as_body=True)
    assert parse_report_message(raw).metadata.org_name == "google.com"


def test_the_dmarcbis_namespace_is_read_like_rfc_7489() -> None:
    report = parse_report_xml(NAMESPACED.encode())
    assert report.policy.domain == "example.test"  # case and namespace do not matter
    assert report.rows[0].disposition == "reject"


def test_a_message_without_a_report_names_what_it_holds() -> None:
    raw = b"From: a@b.example\r\nTo: dmarc-reports@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
    with pytest.raises(ReportError, match=r"no report in the message.*text/plain"):
        parse_report_message(raw)


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"<feedback>" + b" " * 50_000_000)  # ~50 KB compressed, 50 MB inflated
    assert len(bomb) < 100_000
    raw = report_message(bomb, "application/gzip")
    with pytest.raises(ReportError, match="gzip report decompresses to more than 1000000 bytes"):
        parse_report_message(raw, ReportLimits(max_xml_bytes=1_000_000))


def test_a_zip_bomb_stops_at_the_limit_whatever_its_header_claims() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.xml", b"<feedback>" + b" " * 50_000_000)
    raw = report_message(out.getvalue(), "application/zip", filename="bomb.zip")
    with pytest.raises(ReportError, match="zip report decompresses to more than 1000000 bytes"):
        parse_report_message(raw, ReportLimits(max_xml_bytes=1_000_000))


def test_a_truncated_gzip_is_named() -> None:
    raw = report_message(gzipped(google().encode())[:-40], "application/gzip")
    with pytest.raises(ReportError, match="gzip"):
        parse_report_message(raw)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<feedback><report_metadata><org_name>&lol3;</org_name></report_metadata></feedback>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<feedback><report_metadata><org_name>&xxe;</org_name></report_metadata></feedback>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_entities_and_dtds_are_refused(document: bytes) -> None:
    with pytest.raises(ReportError, match="XML report is refused: DTDForbidden"):
        parse_report_xml(document)


def test_xml_that_is_not_well_formed_is_named() -> None:
    with pytest.raises(ReportError, match="not well-formed XML"):
        parse_report_xml(b"<feedback><report_metadata>")


@pytest.mark.parametrize(("old", "new", "message"), [
    ("<source_ip>203.0.113.5</source_ip>", "<source_ip>not-an-ip</source_ip>",
     r"<record\[1\]/row/source_ip> is 'not-an-ip', expected an IPv4 or IPv6 address"),
    ("<count>12</count>", "<count>-1</count>", r"<record\[1\]/row/count> is '-1', expected an integer at least 0"),
    ("<count>3</count>", "<count>many</count>", r"<record\[2\]/row/count> is 'many', expected an integer"),
    ("<disposition>none</disposition>", "<disposition>deliver</disposition>",
     r"<record\[1\]/row/policy_evaluated/disposition> is 'deliver', expected one of none, quarantine, reject"),
    ("<p>none</p>", "<p>maybe</p>", r"<policy_published/p> is 'maybe'"),
    ("<pct>100</pct>", "<pct>150</pct>", r"<policy_published/pct> is '150', expected an integer from 0 to 100"),
    ("<begin>1735689600</begin>", "<begin>yesterday</begin>", r"<report_metadata/date_range/begin> is 'yesterday'"),
    ("<end>1735775999</end>", "<end>1735600000</end>", r"<report_metadata/date_range> ends .* before it begins"),
    ("<report_id>10402651235457367423</report_id>", "", r"<report_metadata> has no <report_id>"),
    ("<header_from>example.test</header_from>", "<header_from> </header_from>",
     r"<record\[1\]/identifiers/header_from> is empty"),
    ("<result>softfail</result>", "<result>maybe</result>", r"<record\[2\]/auth_results/spf/result> is 'maybe'"),
])
def test_a_malformed_value_is_named_with_its_element(old: str, new: str, message: str) -> None:
    document = google().replace(old, new, 1)
    assert document != google()
    with pytest.raises(ReportError, match=message):
        parse_report_xml(document.encode())


def test_a_root_other_than_feedback_is_refused() -> None:
    with pytest.raises(ReportError, match=r"root element is <html>, expected <feedback>"):
        parse_report_xml(b"<html><body/></html>")


def test_too_many_records_are_refused() -> None:
    with pytest.raises(ReportError, match="2 records, over the limit of 1"):
        parse_report_xml(google().encode(), ReportLimits(max_records=1))
