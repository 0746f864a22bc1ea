"""The single writer: group commit, and what its callers are told."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import duckdb

from appliance.database import Database


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
