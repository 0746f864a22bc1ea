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

from appliance.database import Database, DatabaseClosed, DatabaseCorrupt, DatabaseLocked, DatabaseUnavailable


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
