"""The audit tables' reads for other rooms, and the split check of stored messages against their decisions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import duckdb
import msgspec
import pytest

from appliance.audit import append_decision, apply_retention, verify_chain
from appliance.store import audit
from appliance.store.database import Database, utc
from appliance.store.messages import admitted_after
from tests.audit.test_chain import record

A, B = "a@example.test", "b@example.test"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "appliance.duckdb")
    try:
        yield database
    finally:
        database.close()


def store_message(db: Database, email_id: str, agent: str, decision_id: str, *, days_ago: float = 0,
                  mailbox: str = "inbox") -> None:
    db.write_sync(lambda con: con.execute(
        "INSERT INTO messages (email_id, agent, mailbox, thread_id, received_at, decision_id, size, raw) "
        "VALUES (?, ?, ?, 'T1', ?, ?, 1, 'x'::BLOB)",
        [email_id, agent, mailbox, utc() - timedelta(days=days_ago), decision_id]))


def test_reads_for_metrics_usage_and_quarantine(db: Database) -> None:
    db.write_batch_sync(lambda b: append_decision(b, record(0, agent=A)))
    db.write_batch_sync(lambda b: append_decision(b, msgspec.structs.replace(
        record(1, agent=A), action="quarantine", reason="unknown sender", rule=None, thread_id="T2")))
    db.write_batch_sync(lambda b: append_decision(b, msgspec.structs.replace(
        record(2, agent=A), action="bounce", reason="spam", rule=None, thread_id="T2")))
    counts = db.read_sync(audit.decision_counts)
    assert counts == [audit.DecisionCount(agent=A, action="accept", reason="", count=1),
                      audit.DecisionCount(agent=A, action="bounce", reason="spam", count=1),
                      audit.DecisionCount(agent=A, action="quarantine", reason="unknown sender", count=1)]
    assert db.read_sync(lambda con: audit.last_admission(con, A, "T1")) == audit.ThreadAdmission(rule=0)
    # the bounce after it admitted nothing: the quarantine is the thread's last admission, with no rule
    assert db.read_sync(lambda con: audit.last_admission(con, A, "T2")) == audit.ThreadAdmission(rule=None)
    assert db.read_sync(lambda con: audit.last_admission(con, B, "T1")) is None
    assert db.read_sync(lambda con: audit.decision_reason(con, "d0001")) == "unknown sender"
    assert db.read_sync(lambda con: audit.decision_reason(con, "d0000")) is None
    assert db.read_sync(lambda con: audit.decision_reason(con, "nope")) is None


def test_admitted_messages_come_a_page_at_a_time_after_each_agents_cutoff(db: Database) -> None:
    for i, (agent, age) in enumerate([(A, 5), (B, 4), (A, 3), (B, 2), (A, 1)]):
        store_message(db, f"E{i}", agent, f"d{i:04d}", days_ago=age)
    store_message(db, "R", A, "d0099", mailbox="rejected")  # not a mailbox the gate lets mail into

    def pages(con: duckdb.DuckDBPyConnection, since: dict[str, datetime]) -> list[list[str]]:
        found, page = [], admitted_after(con, since, limit=2)
        while page:
            found.append([m.email_id for m in page])
            page = admitted_after(con, since, after=page[-1], limit=2)
        return found

    assert db.read_sync(lambda con: pages(con, {})) == [["E0", "E1"], ["E2", "E3"], ["E4"]]
    assert db.read_sync(lambda con: pages(con, {A: utc() - timedelta(days=2)})) == [["E1", "E3"], ["E4"]]


def test_a_missing_decision_is_named_only_for_messages_after_the_agents_retention(db: Database) -> None:
    for i, age in enumerate([50, 40, 1]):
        db.write_batch_sync(partial(append_decision, record=record(i, agent=A, days_ago=age)))
    store_message(db, "OLD", A, "d0000", days_ago=50)
    store_message(db, "KEPT", A, "d0002", days_ago=1)
    assert db.write_sync(lambda con: apply_retention(con, A, 30, utc())) == 2
    assert db.read_sync(verify_chain).ok  # OLD's decision went with retention, before the checkpoint
    store_message(db, "LOST", A, "gone")
    report = db.read_sync(verify_chain)
    assert not report.ok and report.broken_decision_id == "gone" and "LOST" in report.detail
