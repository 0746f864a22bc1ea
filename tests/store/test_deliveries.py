"""The delivery tables' statements that no delivery test reaches: retention, discarding held jobs, counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.store.database import Database, utc
from appliance.store.deliveries import (
    Attempt,
    DeliveryCount,
    add_delivery,
    delivery_counts,
    discard_held,
    record_attempt,
    remove_finished,
)

AGENT = "agent@example.test"
OTHER = "other@example.test"
NOW = 1_700_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "appliance.duckdb")
    try:
        yield database
    finally:
        database.close()


def job(db: Database, delivery_id: str, *, status: str, agent: str = AGENT, email_id: str | None = None,
        days_old: int = 0, event_type: str = "message.received") -> None:
    created = utc(NOW) - timedelta(days=days_old)
    db.write_batch_sync(lambda batch: add_delivery(
        batch, delivery_id=delivery_id, agent=agent, event_type=event_type, email_id=email_id, decision_id=None,
        created_at=created, status=status, next_attempt_at=NOW, payload="{}"))
    db.write_sync(lambda con: record_attempt(con, Attempt(
        delivery_id=delivery_id, attempt=1, ts=created, status=200, latency_ms=1.0, error=None)))


def statuses(db: Database) -> dict[str, str]:
    rows = db.read_sync(lambda con: con.execute("SELECT delivery_id, status FROM deliveries").fetchall())
    return dict(rows)


def attempted(db: Database) -> set[str]:
    return {r[0] for r in db.read_sync(
        lambda con: con.execute("SELECT delivery_id FROM delivery_attempts").fetchall())}


def test_remove_finished_deletes_only_the_agents_old_finished_jobs_and_their_attempts(db: Database) -> None:
    for status in ("delivered", "discarded", "stream", "pending", "dead", "held"):
        job(db, f"old-{status}", status=status, days_old=10)
    job(db, "new-delivered", status="delivered")
    job(db, "other-delivered", status="delivered", agent=OTHER, days_old=10)

    db.write_sync(lambda con: remove_finished(con, agent=AGENT, before=utc(NOW) - timedelta(days=5)))

    kept = {"old-pending", "old-dead", "old-held", "new-delivered", "other-delivered"}
    assert set(statuses(db)) == kept
    assert attempted(db) == kept


def test_discard_held_discards_only_that_messages_held_jobs(db: Database) -> None:
    job(db, "held", status="held", email_id="e1")
    job(db, "pending", status="pending", email_id="e1")
    job(db, "held-elsewhere", status="held", email_id="e2")

    db.write_sync(lambda con: discard_held(con, "e1"))

    assert statuses(db) == {"held": "discarded", "pending": "pending", "held-elsewhere": "held"}


def test_delivery_counts_per_agent_event_type_and_status_in_order(db: Database) -> None:
    job(db, "a", status="pending")
    job(db, "b", status="pending")
    job(db, "c", status="delivered", event_type="delivery.failed")
    job(db, "d", status="dead", agent=OTHER)

    assert db.read_sync(delivery_counts) == [
        DeliveryCount(agent=AGENT, event_type="delivery.failed", status="delivered", count=1),
        DeliveryCount(agent=AGENT, event_type="message.received", status="pending", count=2),
        DeliveryCount(agent=OTHER, event_type="message.received", status="dead", count=1),
    ]
