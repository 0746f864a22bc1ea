from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from appliance.audit import DecisionRecord, append_decision, apply_retention, verify_chain
from appliance.store.database import Database, utc


def record(i: int, *, agent: str = "agent@example.test", days_ago: float = 0) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d{i:04d}", ts=utc() - timedelta(days=days_ago), agent=agent, client_ip="192.0.2.1",
        helo="mx.example.net", mail_from="a@example.net", rcpt_to=[agent], header_from="a@example.net",
        message_id=f"<{i}@example.net>", subject=f"subject {i}", thread_id="T1", spf="pass", dkim="pass",
        dmarc="pass", rule=0, action="accept", reason=None, capabilities=["read"], estimated_tokens=10,
        size=100 + i, body_sha256="ab" * 32, latency_ms=1.25, intake="smtp")


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(tmp_path / "appliance.duckdb")
    yield database
    database.close()


def test_untouched_chains_verify(db: Database) -> None:
    for i in range(10):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i, agent=f"a{i % 2}@example.test")))
    report = db.read_sync(verify_chain)
    assert report.ok and report.rows == 10 and report.agents == 2


def test_edited_row_is_named(db: Database) -> None:
    for i in range(5):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.write_sync(lambda con: con.execute("UPDATE decisions SET action = 'bounce' WHERE decision_id = 'd0002'"))
    report = db.read_sync(verify_chain)
    assert not report.ok
    assert report.broken_decision_id == "d0002"


def test_deleted_row_breaks_the_next_link(db: Database) -> None:
    for i in range(5):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.write_sync(lambda con: con.execute("DELETE FROM decisions WHERE decision_id = 'd0001'"))
    report = db.read_sync(verify_chain)
    assert not report.ok and report.broken_decision_id == "d0002"


def test_deleted_last_row_is_caught_by_the_chain_head(db: Database) -> None:
    for i in range(3):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.write_sync(lambda con: con.execute("DELETE FROM decisions WHERE decision_id = 'd0002'"))
    assert not db.read_sync(verify_chain).ok


def test_retention_removes_whole_old_days_and_chain_still_verifies(db: Database) -> None:
    for i, age in enumerate([40, 35, 31, 5, 1, 0]):
        db.write_batch_sync(lambda b, i=i, age=age: append_decision(b, record(i, days_ago=age)))
    removed = db.write_sync(lambda con: apply_retention(con, "agent@example.test", 30, utc()))
    assert removed == 3
    report = db.read_sync(verify_chain)
    assert report.ok and report.rows == 3
    assert db.read_sync(lambda con: con.execute("SELECT count(*) FROM audit_checkpoints").fetchone()) == (1,)


def test_group_commit_batches_concurrent_writes(db: Database) -> None:
    import asyncio

    async def many() -> None:
        await asyncio.gather(*(db.write_batch(lambda b, i=i: append_decision(b, record(i))) for i in range(200)))

    asyncio.run(many())
    assert db.read_sync(verify_chain).ok
    assert db.commits < 200  # several rows shared a commit


def test_failing_job_does_not_fail_its_batch_neighbours(db: Database) -> None:
    import asyncio

    def bad(con):  # type: ignore[no-untyped-def]
        con.execute("INSERT INTO no_such_table VALUES (1)")

    async def mixed() -> list[object]:
        return await asyncio.gather(
            db.write_batch(lambda b: append_decision(b, record(1))), db.write(bad),
            db.write_batch(lambda b: append_decision(b, record(2))), return_exceptions=True)

    results = asyncio.run(mixed())
    assert isinstance(results[1], Exception)
    assert db.read_sync(lambda con: con.execute("SELECT count(*) FROM decisions").fetchone()) == (2,)
    assert db.read_sync(verify_chain).ok


def test_verify_sees_one_snapshot_while_the_writer_appends(db: Database) -> None:
    # A row committed between reading an agent's rows and reading its chain head must not
    # read as tampering (the live appliance answers /api/v1/audit/verify while it writes).
    for i in range(3):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))

    class Interleaved:
        def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
            self.con = con
            self.appended = False

        def execute(self, sql: str, params: object = None) -> duckdb.DuckDBPyConnection:
            if sql.startswith("SELECT seq, hash FROM chain_head") and not self.appended:
                self.appended = True
                db.write_batch_sync(lambda b: append_decision(b, record(99)))
            return self.con.execute(sql, params)

    report = db.read_sync(lambda con: verify_chain(Interleaved(con)))  # type: ignore[arg-type]
    assert report.ok, report.detail
    assert report.rows == 3
    assert db.read_sync(verify_chain).rows == 4


def test_columns_added_later_are_chained_and_older_rows_still_verify(db: Database) -> None:
    import msgspec

    from appliance.audit.chain import _COLUMNS, GENESIS, row_hash

    # A row written by the first release: hashed over its 23 columns only, the later ones NULL.
    old = record(0)
    first = tuple(getattr(old, c) for c in _COLUMNS[:23])
    canonical = [v.isoformat() if hasattr(v, "isoformat") else v for v in first]
    import hashlib
    digest = hashlib.sha256(GENESIS.encode() + b"\n" + msgspec.json.encode(canonical)).hexdigest()
    assert row_hash(GENESIS, tuple(getattr(old, c) for c in _COLUMNS)) == digest
    db.write_batch_sync(lambda b: append_decision(b, old))
    refused = msgspec.structs.replace(record(1), action="bounce", reason="malformed_message",
                                      detail="bare CR at byte 12", token_id=None)
    db.write_batch_sync(lambda b: append_decision(b, refused))
    assert db.read_sync(verify_chain).ok
    assert db.read_sync(lambda con: con.execute(
        "SELECT detail FROM decisions WHERE decision_id = 'd0001'").fetchone()) == ("bare CR at byte 12",)
    db.write_sync(lambda con: con.execute("UPDATE decisions SET detail = 'nothing' WHERE decision_id = 'd0001'"))
    assert db.read_sync(verify_chain).broken_decision_id == "d0001"


def test_chain_heads_are_updated_in_place_one_row_per_agent(db: Database) -> None:
    import asyncio

    agents = [f"a{n}@example.test" for n in range(3)]

    async def many() -> None:  # several agents' rows share commits: one UPDATE moves several heads
        await asyncio.gather(*(db.write_batch(lambda b, i=i: append_decision(b, record(i, agent=agents[i % 3])))
                               for i in range(60)))

    asyncio.run(many())
    db.write_batch_sync(lambda b: append_decision(b, record(60, agent=agents[0])))
    assert db.commits < 61
    heads = db.read_sync(lambda con: con.execute("SELECT agent, seq, hash FROM chain_head ORDER BY agent").fetchall())
    newest = db.read_sync(lambda con: con.execute(
        "SELECT agent, max(seq), arg_max(row_hash, seq) FROM decisions GROUP BY agent ORDER BY agent").fetchall())
    assert heads == newest
    assert db.read_sync(verify_chain).ok


def test_a_head_row_removed_behind_the_writer_is_written_anew(db: Database) -> None:
    for i in range(3):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.write_sync(lambda con: con.execute("DELETE FROM chain_head"))  # the writer still believes it exists
    db.write_batch_sync(lambda b: append_decision(b, record(3)))
    assert db.read_sync(lambda con: con.execute("SELECT seq FROM chain_head").fetchall()) == [(4,)]
    assert db.read_sync(verify_chain).ok
