"""The local mail store: which thread a new message joins, and who may join it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.mail import ParsedMessage, parse_message, thread_root
from appliance.store.database import Database, utc
from appliance.store.messages import (
    INBOX,
    QUARANTINE,
    StoredMessage,
    may_join_thread,
    message_agent,
    resolve_thread,
    save_message,
)

AGENT = "agent@example.test"
NOW = utc(1_700_000_000)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "appliance.duckdb")
    try:
        yield database
    finally:
        database.close()


def mail(sender: str, message_id: str, *, subject: str = "plan", refs: str = "",
         in_reply_to: str = "") -> ParsedMessage:
    headers = f"From: {sender}\r\nTo: {AGENT}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
    headers += f"References: {refs}\r\n" if refs else ""
    headers += f"In-Reply-To: {in_reply_to}\r\n" if in_reply_to else ""
    return parse_message(f"{headers}\r\nbody\r\n".encode())


def receive(db: Database, parsed: ParsedMessage, *, agent: str = AGENT, mailbox: str = INBOX,
            at_minutes: int = 0) -> str:
    """Thread ``parsed`` as reception does, store it, and return its thread id."""
    now = NOW + timedelta(minutes=at_minutes)
    if may_join_thread(parsed):
        thread = db.read_sync(lambda con: resolve_thread(con, agent, parsed, now))
    else:
        thread = thread_root(parsed)  # what the gate uses when reception looks nothing up
    n = db.read_sync(lambda con: con.execute("SELECT count(*) FROM messages").fetchone())
    email_id = f"e{n[0] if n else 0:04d}"
    db.write_batch_sync(lambda batch: save_message(batch, StoredMessage(
        email_id=email_id, agent=agent, mailbox=mailbox, thread_id=thread, message_id=parsed.message_id,
        subject=parsed.subject, sender=parsed.sender.address, received_at=now, decision_id="d" + email_id[1:],
        keywords=[], size=1, raw=b"x")))
    return thread


def test_a_reply_from_the_same_sender_joins_its_thread(db: Database) -> None:
    root = receive(db, mail("boss@acme.com", "<m1@acme.com>"))
    assert receive(db, mail("boss@acme.com", "<m2@acme.com>", subject="Re: plan", refs="<m1@acme.com>",
                            in_reply_to="<m1@acme.com>"), at_minutes=1) == root
    # In-Reply-To alone, any case of the address, and a reply to the reply: all the same conversation.
    assert receive(db, mail("BOSS@Acme.COM", "<m3@acme.com>", in_reply_to="<m2@acme.com>"), at_minutes=2) == root
    assert receive(db, mail("boss@acme.com", "<m4@acme.com>", refs="<gone@acme.com> <m3@acme.com>"),
                   at_minutes=3) == root


def test_naming_another_senders_message_id_does_not_join_their_thread(db: Database) -> None:
    victim = receive(db, mail("boss@acme.com", "<m1@acme.com>"))
    by_refs = receive(db, mail("eve@evil.example", "<e1@evil.example>", refs="<m1@acme.com>"), at_minutes=1)
    by_reply_to = receive(db, mail("mallory@evil.example", "<x1@evil.example>", in_reply_to="<m1@acme.com>"),
                          at_minutes=2)
    assert victim not in (by_refs, by_reply_to)
    assert by_refs != by_reply_to  # each intruder is alone in a thread of its own
    # The intruder's own follow-ups continue the intruder's thread, never the victim's.
    assert receive(db, mail("eve@evil.example", "<e2@evil.example>", refs="<m1@acme.com> <e1@evil.example>"),
                   at_minutes=3) == by_refs
    assert receive(db, mail("eve@evil.example", "<e3@evil.example>", refs="<m1@acme.com>"), at_minutes=4) == by_refs
    # And the victim's thread carries on undisturbed.
    assert receive(db, mail("boss@acme.com", "<m2@acme.com>", refs="<m1@acme.com> <e1@evil.example>"),
                   at_minutes=5) == victim


def test_the_same_domain_is_not_the_same_counterpart(db: Database) -> None:
    boss = receive(db, mail("boss@acme.com", "<m1@acme.com>"))
    colleague = receive(db, mail("colleague@acme.com", "<c1@acme.com>", refs="<m1@acme.com>"), at_minutes=1)
    assert colleague != boss


def test_a_reply_subject_joins_only_the_same_senders_thread(db: Database) -> None:
    boss = receive(db, mail("boss@acme.com", "<m1@acme.com>", subject="Quarterly plan"))
    assert receive(db, mail("boss@acme.com", "<m2@acme.com>", subject="RE: Fwd: quarterly  plan"),
                   at_minutes=1) == boss
    intruder = receive(db, mail("eve@evil.example", "<e1@evil.example>", subject="Re: Quarterly plan"),
                       at_minutes=2)
    assert intruder != boss


def test_unknown_references_give_each_sender_its_own_thread(db: Database) -> None:
    # The agent wrote first (its message is not stored): every correspondent's replies meet in one
    # thread per correspondent, and nobody lands in the thread the bare root would name.
    first = receive(db, mail("a@example.net", "<a1@example.net>", refs="<agent-1@example.test>"))
    again = receive(db, mail("a@example.net", "<a2@example.net>", refs="<agent-1@example.test> <agent-2@example.test>"),
                    at_minutes=1)
    other = receive(db, mail("b@example.net", "<b1@example.net>", refs="<agent-1@example.test>"), at_minutes=2)
    bare = thread_root(mail("a@example.net", "<agent-1@example.test>"))
    assert first == again
    assert other != first
    assert bare not in (first, other)


def test_quarantined_mail_counts_and_other_agents_mail_does_not(db: Database) -> None:
    held = receive(db, mail("boss@acme.com", "<m1@acme.com>"), mailbox=QUARANTINE)
    assert receive(db, mail("boss@acme.com", "<m2@acme.com>", refs="<m1@acme.com>"), at_minutes=1) == held
    elsewhere = receive(db, mail("boss@acme.com", "<m3@acme.com>", refs="<m1@acme.com>"), agent="other@example.test",
                        at_minutes=2)
    assert elsewhere != held


def test_message_agent_by_mailbox(db: Database) -> None:
    receive(db, mail("boss@acme.com", "<m1@acme.com>"), mailbox=QUARANTINE)
    assert db.read_sync(lambda con: message_agent(con, "e0000")) == AGENT
    assert db.read_sync(lambda con: message_agent(con, "e0000", mailbox=QUARANTINE)) == AGENT
    assert db.read_sync(lambda con: message_agent(con, "e0000", mailbox=INBOX)) is None
    assert db.read_sync(lambda con: message_agent(con, "absent")) is None
