"""DSNs (RFC 3464) for our own mail: real-world-shaped reports read, linked to the sent message, raised as events."""

from __future__ import annotations

from datetime import datetime

from appliance.outbound.dsn import parse_dsn
from appliance.outbound.queue import bounce_from_dsn, link_bounce
from appliance.store.database import Database
from appliance.store.messages import StoredMessage, save_message
from tests.conftest import AGENT, OTHER_AGENT
from tests.outbound.conftest import audit_of, events_of, outbound, queue

POSTFIX = b"""Return-Path: <>\r
Received: by mail.example.org (Postfix) id 3F2A11C0A1; Mon, 23 Nov 2026 10:05:00 +0000 (UTC)\r
Date: Mon, 23 Nov 2026 10:05:00 +0000 (UTC)\r
From: MAILER-DAEMON@mail.example.org (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: agent@example.test\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary="3F2A11C0A1.1795428300/mail.example.org"\r
Message-Id: <20261123100500.1B2C3D@mail.example.org>\r
\r
This is a MIME-encapsulated message.\r
\r
--3F2A11C0A1.1795428300/mail.example.org\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mail.example.org.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients. It's attached below.\r
\r
<bob@example.org>: host mx.example.org[192.0.2.25] said: 550 5.1.1\r
    <bob@example.org>: Recipient address rejected: User unknown in virtual\r
    mailbox table (in reply to RCPT TO command)\r
\r
--3F2A11C0A1.1795428300/mail.example.org\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mail.example.org\r
X-Postfix-Queue-ID: 3F2A11C0A1\r
X-Postfix-Sender: rfc822; agent@example.test\r
Arrival-Date: Mon, 23 Nov 2026 10:04:58 +0000 (UTC)\r
Original-Envelope-Id: s0001\r
\r
Final-Recipient: rfc822; bob@example.org\r
Original-Recipient: rfc822;bob@example.org\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mx.example.org\r
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected:\r
    User unknown in virtual mailbox table\r
\r
Final-Recipient: rfc822; carol@example.org\r
Action: delayed\r
Status: 4.4.1\r
Diagnostic-Code: X-Postfix; connect to mx.example.org[192.0.2.25]:25: Connection timed out\r
Will-Retry-Until: Sat, 28 Nov 2026 10:04:58 +0000 (UTC)\r
\r
--3F2A11C0A1.1795428300/mail.example.org\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
Return-Path: <agent@example.test>\r
Received: from mx.example.test (mx.example.test [198.51.100.7])\r
\tby mail.example.org (Postfix) with ESMTPS id 3F2A11C0A1\r
\tfor <bob@example.org>; Mon, 23 Nov 2026 10:04:58 +0000 (UTC)\r
From: Agent <agent@example.test>\r
To: bob@example.org, carol@example.org\r
Subject: hello 1\r
Message-ID: <m1@mx.example.test>\r
Date: Mon, 23 Nov 2026 10:00:00 +0000\r
\r
--3F2A11C0A1.1795428300/mail.example.org--\r
"""
"""The shape Postfix's bounce(8) sends: a failed and a delayed recipient, the original headers returned."""

GMAIL_LIKE = b"""From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r
To: agent@example.test\r
Auto-Submitted: auto-replied\r
Subject: Delivery Status Notification (Failure)\r
Message-ID: <abc.123@mx.google.com>\r
Content-Type: multipart/report; boundary="000000000000b1"; report-type=delivery-status\r
\r
--000000000000b1\r
Content-Type: multipart/related; boundary="000000000000b2"\r
\r
--000000000000b2\r
Content-Type: text/plain; charset="UTF-8"\r
\r
Address not found\r
--000000000000b2--\r
--000000000000b1\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; googlemail.com\r
Received-From-MTA: dns; mx.example.test\r
Arrival-Date: Mon, 23 Nov 2026 02:00:00 -0800 (PST)\r
X-Original-Message-ID: <m2@mx.example.test>\r
\r
Final-Recipient: rfc822; nobody@gmail.example\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0::1a, the server for the domain gmail.example.)\r
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.\r
Last-Attempt-Date: Mon, 23 Nov 2026 02:00:01 -0800 (PST)\r
\r
--000000000000b1\r
Content-Type: message/rfc822\r
\r
From: Agent <agent@example.test>\r
To: nobody@gmail.example\r
Subject: hello 2\r
Message-ID: <m2@mx.example.test>\r
\r
body 2\r
--000000000000b1--\r
"""
"""Gmail's shape: the explanation in a multipart/related, the whole original returned, no envelope id."""


def test_a_postfix_dsn_is_read_recipient_by_recipient() -> None:
    report = parse_dsn(POSTFIX)
    assert report is not None
    assert report.reporting_mta == "mail.example.org" and report.envelope_id == "s0001"
    assert report.message_id == "<m1@mx.example.test>"
    bob, carol = report.recipients
    assert (bob.final_recipient, bob.original_recipient, bob.action, bob.status, bob.code) == (
        "bob@example.org", "bob@example.org", "failed", "5.1.1", 550)
    assert bob.diagnostic == ("550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual "
                              "mailbox table")
    assert bob.remote_mta == "mx.example.org"
    assert (carol.action, carol.status, carol.code) == ("delayed", "4.4.1", None)
    assert [r.final_recipient for r in report.failed] == ["bob@example.org"]


def test_a_gmail_shaped_dsn_links_by_the_returned_message_id() -> None:
    report = parse_dsn(GMAIL_LIKE)
    assert report is not None and report.envelope_id is None
    assert report.message_id == "<m2@mx.example.test>"
    [nobody] = report.recipients
    assert (nobody.final_recipient, nobody.action, nobody.status, nobody.code) == (
        "nobody@gmail.example", "failed", "5.1.1", 550)


def test_what_is_not_a_delivery_report_is_none() -> None:
    plain = b"From: a@example.org\r\nTo: agent@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
    mdn = POSTFIX.replace(b"report-type=delivery-status", b"report-type=disposition-notification")
    end = b"\r\n--3F2A11C0A1.1795428300/mail.example.org--\r\n"
    no_recipient = POSTFIX.split(b"Final-Recipient: rfc822; bob")[0] + end
    assert parse_dsn(plain) is None and parse_dsn(mdn) is None and parse_dsn(no_recipient) is None
    assert parse_dsn(b"\xff\xfe garbage") is None


async def test_a_dsn_is_linked_by_envelope_id_then_by_message_id_and_only_for_its_agent(db: Database) -> None:
    await queue(db, outbound(1, ["bob@example.org", "carol@example.org"]), 1_800_000_000.0)
    sent_copy = outbound(2, ["nobody@gmail.example"])
    await db.write_batch(lambda batch: save_message(batch, StoredMessage(
        email_id="e-sent-2", agent=AGENT, mailbox="sent", thread_id="T2", message_id=sent_copy.message_id,
        subject="hello 2", sender=AGENT, received_at=datetime(2026, 11, 23, 10), decision_id="d-2", size=10,
        keywords=[], raw=sent_copy.raw)))
    postfix, gmail = parse_dsn(POSTFIX), parse_dsn(GMAIL_LIKE)
    assert postfix is not None and gmail is not None
    assert await db.read(lambda con: link_bounce(con, postfix)) == "s0001"
    assert await db.read(lambda con: link_bounce(con, gmail, agent=AGENT)) == "e-sent-2"
    assert await db.read(lambda con: link_bounce(con, gmail, agent=OTHER_AGENT)) is None
    assert await db.read(lambda con: link_bounce(con, postfix, agent=OTHER_AGENT)) is None


async def test_a_dsn_for_our_mail_raises_message_bounced_for_its_failed_recipients(db: Database) -> None:
    message = outbound(1, ["bob@example.org", "carol@example.org"])
    await queue(db, message, 1_800_000_000.0)
    report = parse_dsn(POSTFIX)
    assert report is not None
    linked = await db.write_batch(lambda batch: bounce_from_dsn(batch, report, agent=AGENT, now=1_800_000_100.0))
    assert linked == message.email_id
    [(kind, data)] = await events_of(db)
    assert kind == "message.bounced" and data["reason"] == "dsn" and data["attempts"] == 0
    assert data["emailId"] == message.email_id and data["threadId"] == "T1" and data["jobId"] is None
    assert data["recipients"] == [{"address": "bob@example.org", "code": 550, "status": "5.1.1", "detail": (
        "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table")}]
    [(audit, agent, detail)] = await audit_of(db)
    assert audit == "outbound.dsn" and agent == AGENT and "mail.example.org" in detail
    other = await db.write_batch(lambda batch: bounce_from_dsn(batch, report, agent=OTHER_AGENT, now=0.0))
    assert other is None and len(await events_of(db)) == 1, "another agent's DSN says nothing about this mail"
    stranger = parse_dsn(POSTFIX.replace(b"rfc822; bob@example.org", b"rfc822; eve@example.net")
                         .replace(b"rfc822;bob@example.org", b"rfc822;eve@example.net"))
    assert stranger is not None and [r.final_recipient for r in stranger.failed] == ["eve@example.net"]
    unrelated = await db.write_batch(lambda batch: bounce_from_dsn(batch, stranger, agent=AGENT, now=0.0))
    assert unrelated is None and len(await events_of(db)) == 1, "only the message's own recipients can bounce"


async def test_a_forwarded_copy_bounces_under_the_address_we_sent_to(db: Database) -> None:
    message = outbound(1, ["info@example.org"])
    await queue(db, message, 1_800_000_000.0)
    forwarded = parse_dsn(POSTFIX.replace(b"Final-Recipient: rfc822; bob@example.org",
                                          b"Final-Recipient: rfc822; bob@elsewhere.example")
                          .replace(b"Original-Recipient: rfc822;bob@example.org",
                                   b"Original-Recipient: rfc822;info@example.org"))
    assert forwarded is not None
    await db.write_batch(lambda batch: bounce_from_dsn(batch, forwarded, agent=AGENT, now=1_800_000_100.0))
    [(_, data)] = await events_of(db)
    assert [r["address"] for r in data["recipients"]] == ["info@example.org"]
