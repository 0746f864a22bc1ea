"""The outbound tables' statements that the queue's own tests do not reach: blobs and idempotency keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.store.database import Database, utc
from appliance.store.outbound import (
    StoredBlob,
    blobs_used_since,
    delete_blobs_unused_since,
    delete_keys_before,
    insert_blob,
    key_since,
    mark_blobs_used,
    replace_key,
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


def blob(blob_id: str, *, agent: str = AGENT, hours_ago: int = 0) -> StoredBlob:
    return StoredBlob(blob_id=blob_id, agent=agent, content_type="text/plain", filename=None, size=3,
                      sha256="00", created_at=NOW - timedelta(hours=hours_ago), data=b"abc")


def test_a_blob_is_found_by_its_agent_while_used_recently(db: Database) -> None:
    db.write_sync(lambda con: insert_blob(con, blob("b1")))
    db.write_sync(lambda con: insert_blob(con, blob("b2", hours_ago=30)))
    db.write_sync(lambda con: insert_blob(con, blob("b3", agent="other@example.test")))
    found = db.read_sync(lambda con: blobs_used_since(con, AGENT, ["b1", "b2", "b3"], NOW - timedelta(hours=24)))
    assert found == [blob("b1")]


def test_using_a_blob_keeps_it_and_unused_ones_go(db: Database) -> None:
    db.write_sync(lambda con: insert_blob(con, blob("b1", hours_ago=30)))
    db.write_sync(lambda con: insert_blob(con, blob("b2", hours_ago=30)))
    db.write_batch_sync(lambda batch: mark_blobs_used(batch, ["b1"], NOW))
    db.write_batch_sync(lambda batch: mark_blobs_used(batch, [], NOW))  # nothing to mark: no statement
    assert db.write_sync(lambda con: delete_blobs_unused_since(con, NOW - timedelta(hours=24))) == 1
    found = db.read_sync(lambda con: blobs_used_since(con, AGENT, ["b1", "b2"], NOW - timedelta(hours=24)))
    assert [b.blob_id for b in found] == ["b1"]


def test_a_key_is_replaced_and_expires(db: Database) -> None:
    def remember(result: str, created_at: float) -> None:
        db.write_batch_sync(lambda batch: replace_key(batch, agent=AGENT, key="k", request_sha256=result * 2,
                                                      email_id="e1", result=result, created_at=created_at))

    remember('"first"', 100.0)
    remember('"second"', 200.0)
    found = db.read_sync(lambda con: key_since(con, AGENT, "k", 150.0))
    assert found is not None and (found.result, found.request_sha256, found.created_at) == (
        '"second"', '"second""second"', 200.0)
    assert db.read_sync(lambda con: key_since(con, AGENT, "k", 250.0)) is None
    assert db.read_sync(lambda con: key_since(con, "other@example.test", "k", 0.0)) is None
    assert db.write_sync(lambda con: delete_keys_before(con, 250.0)) == 1
    assert db.read_sync(lambda con: key_since(con, AGENT, "k", 0.0)) is None
