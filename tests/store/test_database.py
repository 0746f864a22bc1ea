"""The single writer: group commit, and what its callers are told; opening a file that is not fit to open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from appliance.store.database import (
    Batch,
    Database,
    DatabaseClosed,
    DatabaseCorrupt,
    DatabaseLocked,
    DatabaseUnavailable,
    NextVal,
)


def test_a_job_that_swallows_its_database_error_cannot_make_its_batch_look_committed(tmp_path: Path) -> None:
    # DuckDB's COMMIT of a transaction that a failed statement aborted rolls it back without
    # a word: every caller of the batch would be told "committed" (an SMTP 250) for nothing.
    db = Database(tmp_path / "appliance.duckdb")
    try:
        db.write_sync(lambda con: con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)"))
        gate = threading.Event()

        def swallow(con: duckdb.DuckDBPyConnection) -> None:
            with contextlib.suppress(duckdb.Error):
                con.execute("INSERT INTO t VALUES (1), (1)")

        async def batched() -> list[object]:
            blocker = asyncio.ensure_future(db.write(lambda con: gate.wait(5)))
            await asyncio.sleep(0.05)  # the writer is now busy with the blocker: the next two share a batch
            jobs = asyncio.gather(db.write(lambda con: con.execute("INSERT INTO t VALUES (2)")),
                                  db.write(swallow), return_exceptions=True)
            await asyncio.sleep(0.05)
            gate.set()
            await blocker
            return list(await jobs)

        first, second = asyncio.run(batched())
        assert not isinstance(first, BaseException)
        assert isinstance(second, duckdb.Error)  # its insert was not committed: it must not look so
        assert db.read_sync(lambda con: con.execute("SELECT a FROM t").fetchall()) == [(2,)]
    finally:
        db.close()


def _shared_batch(db: Database, *works: object) -> list[object]:
    """Run ``works`` (batched jobs) in one group commit: queued while the writer is held by a blocker."""
    gate = threading.Event()

    async def batched() -> list[object]:
        blocker = asyncio.ensure_future(db.write(lambda con: gate.wait(5)))
        await asyncio.sleep(0.05)
        jobs = asyncio.gather(*(db.write_batch(w) for w in works), return_exceptions=True)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return list(await jobs)

    return asyncio.run(batched())


def test_a_batched_job_that_swallows_a_failed_statement_cannot_make_its_batch_look_committed(tmp_path: Path) -> None:
    # Without the connection handed out, the writer skips its probe: the batch itself must
    # know that a statement it ran failed, even when the job caught the error.
    db = Database(tmp_path / "appliance.duckdb")
    try:
        db.write_sync(lambda con: con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)"))

        def swallow_execute(batch: Batch) -> None:
            with contextlib.suppress(duckdb.Error):
                batch.execute("INSERT INTO t VALUES (1), (1)")

        def swallow_flush(batch: Batch) -> None:
            batch.insert("t", ("a",), (3,))
            batch.insert("t", ("a",), (3,))
            with contextlib.suppress(duckdb.Error):
                batch.flush()

        def swallow_on_con(batch: Batch) -> None:
            with contextlib.suppress(duckdb.Error):
                batch.con.execute("INSERT INTO t VALUES (4), (4)")

        for swallow in (swallow_execute, swallow_flush, swallow_on_con):
            fine, swallowed = _shared_batch(db, lambda b: b.insert("t", ("a",), (2,)), swallow)
            assert not isinstance(fine, BaseException)
            assert isinstance(swallowed, duckdb.Error), swallow.__name__
            assert db.read_sync(lambda con: con.execute("SELECT a FROM t").fetchall()) == [(2,)]
            db.write_sync(lambda con: con.execute("DELETE FROM t"))
    finally:
        db.close()


def test_batched_rows_keep_their_types_and_sequences(tmp_path: Path) -> None:
    from datetime import datetime

    db = Database(tmp_path / "appliance.duckdb")
    try:
        db.write_sync(lambda con: con.execute(
            "CREATE SEQUENCE s1 START 1; CREATE SEQUENCE s2 START 100; "
            "CREATE TABLE t (id VARCHAR PRIMARY KEY, n BIGINT NOT NULL DEFAULT nextval('s1'), m BIGINT NOT NULL, "
            "raw BLOB, tags VARCHAR[], ts TIMESTAMP, x DOUBLE, note VARCHAR)"))
        columns = ("id", "n", "m", "raw", "tags", "ts", "x", "note")
        moment = datetime(2026, 5, 1, 12, 30, 15, 123456)

        def rows(first: int, count: int) -> object:
            def work(batch: Batch) -> None:
                for i in range(first, first + count):
                    batch.insert("t", columns, (f"r{i}", NextVal("s1"), NextVal("s2"), bytes([0, 255, i]),
                                                [] if i % 2 else ["a", "b'c"], moment, i / 4, None if i % 3 else "é"))
            return work

        db.write_batch_sync(rows(0, 3))  # type: ignore[arg-type]
        _shared_batch(db, rows(3, 2), rows(5, 2))
        got = db.read_sync(lambda con: con.execute("SELECT * FROM t ORDER BY n").fetchall())
        assert [r[0] for r in got] == [f"r{i}" for i in range(7)]
        assert [r[1] for r in got] == list(range(1, 8))  # from the column's default
        assert [r[2] for r in got] == list(range(100, 107))  # drawn from the sequence
        assert got[2][3:] == (bytes([0, 255, 2]), ["a", "b'c"], moment, 0.5, None)
        assert got[3][3:] == (bytes([0, 255, 3]), [], moment, 0.75, "é")
    finally:
        db.close()


def test_a_rolled_back_batch_leaves_nothing_and_the_next_one_writes(tmp_path: Path) -> None:
    db = Database(tmp_path / "appliance.duckdb")
    try:
        db.write_sync(lambda con: con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b VARCHAR)"))
        db.write_batch_sync(lambda b: b.insert("t", ("a", "b"), (1, "one")))

        def duplicate(batch: Batch) -> None:
            batch.insert("t", ("a", "b"), (2, "two"))
            batch.insert("t", ("a", "b"), (1, "again"))

        with pytest.raises(duckdb.ConstraintException):
            db.write_batch_sync(duplicate)

        def read_half_then_insert(batch: Batch) -> None:
            # a result left unread must not stop the rows queued after it
            batch.execute("SELECT * FROM range(100000) UNION ALL SELECT a FROM t").fetchone()
            batch.insert("t", ("a", "b"), (3, "three"))

        db.write_batch_sync(read_half_then_insert)
        assert db.read_sync(lambda con: con.execute("SELECT a, b FROM t ORDER BY a").fetchall()) == [
            (1, "one"), (3, "three")]
    finally:
        db.close()


def test_a_write_after_close_fails_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "appliance.duckdb")
    db.write_sync(lambda con: con.execute("CREATE TABLE t (a INTEGER)"))
    db.close()

    async def late() -> None:
        await asyncio.wait_for(db.write(lambda con: con.execute("INSERT INTO t VALUES (1)")), 2)

    with pytest.raises(DatabaseClosed, match="closed"):
        asyncio.run(late())
    with pytest.raises(DatabaseClosed):
        asyncio.run(asyncio.wait_for(db.write_batch(lambda batch: None), 2))
    done: list[BaseException] = []

    def sync_write() -> None:
        try:
            db.write_sync(lambda con: None)
        except BaseException as exc:  # recorded for the assertion below
            done.append(exc)

    writer = threading.Thread(target=sync_write, daemon=True)
    writer.start()
    writer.join(2)
    assert not writer.is_alive() and isinstance(done[0], DatabaseClosed)
    with pytest.raises(DatabaseClosed):
        db.read_sync(lambda con: con.execute("SELECT 1").fetchall())
    db.close()  # twice is harmless


def test_writes_queued_before_close_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "appliance.duckdb"
    db = Database(path)
    db.write_sync(lambda con: con.execute("CREATE TABLE t (a INTEGER)"))

    async def queued_then_closed() -> None:
        pending = [asyncio.ensure_future(db.write(lambda con, n=n: con.execute("INSERT INTO t VALUES (?)", [n])))
                   for n in range(20)]
        await asyncio.sleep(0)  # every write is queued
        await asyncio.to_thread(db.close)
        await asyncio.gather(*pending)

    asyncio.run(queued_then_closed())
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (20,)
    finally:
        con.close()


def _real_database(path: Path) -> None:
    """A genuine file with a few hundred kilobytes in it, closed cleanly."""
    db = Database(path)
    db.write_sync(lambda con: con.execute(
        "INSERT INTO events SELECT now()::TIMESTAMP, 'test', 'a@b', repeat('x', 200) FROM range(20000)"))
    db.close()


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated to half", "header only"])
def test_a_damaged_file_is_reported_as_damaged_not_as_locked(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "appliance.duckdb"
    if damage == "garbage":
        path.write_bytes(os.urandom(64 * 1024))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        _real_database(path)
        data = path.read_bytes()
        cut = {"truncated to half": len(data) // 2, "header only": 12288}[damage]
        path.write_bytes(data[:cut])
    with pytest.raises(DatabaseCorrupt) as caught:
        Database(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "damaged" in message and "backup" in message
    assert "another process" not in message and "running" not in message
    assert not isinstance(caught.value, DatabaseLocked) and caught.value.__cause__ is None


def test_a_file_held_by_another_process_says_so(tmp_path: Path) -> None:
    path = tmp_path / "appliance.duckdb"
    _real_database(path)
    with subprocess.Popen(
            [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('held', "
                                   "flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with pytest.raises(DatabaseLocked) as caught:
                Database(path)
            message = str(caught.value)
            assert "\n" not in message and str(path) in message and "another process" in message
            assert f"PID {holder.pid}" in message and "damaged" not in message
        finally:
            holder.kill()


def test_something_else_wrong_is_neither_locked_nor_damaged(tmp_path: Path) -> None:
    path = tmp_path / "appliance.duckdb"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(DatabaseUnavailable) as caught:
        Database(path)
    assert type(caught.value) is DatabaseUnavailable and str(path) in str(caught.value)
