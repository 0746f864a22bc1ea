"""Reports over real loopback SMTP: kept, never seen by the gate or an agent; broken ones still get 250."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import pytest

from appliance.config import SmtpConfig
from appliance.inbound.smtp import SmtpServer, start_smtp_server
from appliance.reports import is_report_recipient, take_report
from appliance.runtime import Runtime
from appliance.store.reports import stored_reports
from tests.conftest import AGENT, HOSTNAME
from tests.reports.samples import google, gzipped, report_message


@pytest.fixture
async def smtp(runtime: Runtime) -> AsyncIterator[SmtpServer]:
    server = await start_smtp_server(SmtpConfig(listen="127.0.0.1:0"), runtime.reception, hostname=HOSTNAME,
                                     reports=runtime.config)
    yield server
    await server.stop()


async def counts(runtime: Runtime) -> tuple[int, int, int]:
    """Decisions, stored messages, delivery jobs."""
    row = await runtime.db.read(lambda con: con.execute(
        "SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM messages), "
        "(SELECT count(*) FROM deliveries)").fetchone())
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def events(runtime: Runtime, kind: str) -> list[str]:
    rows = await runtime.db.read(lambda con: con.execute(
        "SELECT detail FROM events WHERE type = ? ORDER BY ts", [kind]).fetchall())
    return [r[0] for r in rows]


def test_the_report_address_is_the_local_part_at_an_agents_domain(runtime: Runtime) -> None:
    config = runtime.config
    assert is_report_recipient("dmarc-reports@example.test", config)
    assert is_report_recipient("<DMARC-Reports@Example.Test>", config)
    assert not is_report_recipient("dmarc-reports@elsewhere.example", config)
    assert not is_report_recipient(AGENT, config)
    assert not is_report_recipient("postmaster@example.test", config)


async def test_a_report_over_smtp_is_kept_and_reaches_no_gate_and_no_agent(runtime: Runtime,
                                                                          smtp: SmtpServer) -> None:
    raw = report_message(gzipped(google().encode()), "application/gzip")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port) as client:
        rejected, reply = await client.sendmail("noreply-dmarc-support@google.com", ["dmarc-reports@example.test"],
                                                raw)
    assert rejected == {} and reply.startswith("2.0.0 Report kept")
    kept = await runtime.db.read(stored_reports)
    assert [(r.org_name, r.records) for r in kept] == [("google.com", 2)]
    assert await counts(runtime) == (0, 0, 0)
    assert len(await events(runtime, "dmarc.report")) == 1


async def test_the_same_report_twice_is_kept_once(runtime: Runtime, smtp: SmtpServer) -> None:
    raw = report_message(google().encode(), "text/xml", as_body=True)
    for _ in range(2):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port) as client:
            _, reply = await client.sendmail("r@google.com", ["dmarc-reports@example.test"], raw)
    assert "Report duplicate" in reply
    assert len(await runtime.db.read(stored_reports)) == 1


async def test_a_broken_report_gets_250_and_is_audited_as_rejected(runtime: Runtime, smtp: SmtpServer) -> None:
    raw = report_message(b"<feedback><oops>", "text/xml", as_body=True)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port) as client:
        rejected, reply = await client.sendmail("r@google.com", ["dmarc-reports@example.test"], raw)
    assert rejected == {} and "Report rejected" in reply
    assert await runtime.db.read(stored_reports) == []
    [detail] = await events(runtime, "dmarc.report_rejected")
    assert "not well-formed XML" in detail
    assert await counts(runtime) == (0, 0, 0)


async def test_a_report_and_an_agent_are_not_taken_in_one_transaction(runtime: Runtime, smtp: SmtpServer) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port) as client:
        await client.ehlo()
        await client.mail("r@google.com")
        first = await client.rcpt("dmarc-reports@example.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(AGENT)
    assert first.code == 250 and refused.value.code == 452


async def test_without_the_report_configuration_the_address_is_no_recipient(runtime: Runtime) -> None:
    server = await start_smtp_server(SmtpConfig(listen="127.0.0.1:0"), runtime.reception, hostname=HOSTNAME)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port) as client:
            await client.ehlo()
            await client.mail("r@google.com")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt("dmarc-reports@example.test")
        assert refused.value.code == 550
    finally:
        await server.stop()


async def test_take_report_says_what_became_of_the_message(runtime: Runtime) -> None:
    raw = report_message(google().encode(), "text/xml", as_body=True)
    first = await take_report(runtime.db, raw)
    again = await take_report(runtime.db, raw)
    assert (first.state, first.org_name, first.domain, first.records) == ("kept", "google.com", "example.test", 2)
    assert again.state == "duplicate"
    broken = await take_report(runtime.db, b"Subject: x\r\n\r\nnothing\r\n")
    assert broken.state == "rejected" and broken.error is not None and "no report" in broken.error
