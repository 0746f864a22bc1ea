"""The appliance's one DuckDB file: messages, decisions, deliveries and limits.

One file so that a message, its audit row and its delivery job commit in one
transaction. DuckDB lets one process write, so a running appliance owns it:
every write goes through a single writer thread that groups the jobs queued
meanwhile into one transaction (group commit: one WAL fsync for many
messages, and the awaiting callers are answered only after COMMIT returned).
Reads run on their own cursors in worker threads.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "Database", "DatabaseLocked", "open_readonly", "utc"]

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast

import duckdb

T = TypeVar("T")
Work = Callable[[duckdb.DuckDBPyConnection], T]

SCHEMA = [
    # audit: one row per gate decision, hash-chained (appliance.audit)
    """CREATE TABLE IF NOT EXISTS decisions (
        seq BIGINT PRIMARY KEY,
        decision_id VARCHAR NOT NULL UNIQUE,
        ts TIMESTAMP NOT NULL,
        agent VARCHAR NOT NULL,
        client_ip VARCHAR,
        helo VARCHAR,
        mail_from VARCHAR,
        rcpt_to VARCHAR[],
        header_from VARCHAR,
        message_id VARCHAR,
        subject VARCHAR,
        thread_id VARCHAR,
        spf VARCHAR,
        dkim VARCHAR,
        dmarc VARCHAR,
        rule INTEGER,
        action VARCHAR NOT NULL,
        reason VARCHAR,
        capabilities VARCHAR[],
        estimated_tokens INTEGER,
        size BIGINT,
        body_sha256 VARCHAR,
        latency_ms DOUBLE,
        intake VARCHAR,
        prev_hash VARCHAR NOT NULL,
        row_hash VARCHAR NOT NULL
    )""",
    # audit: the newest row's sequence number and hash, updated with every row
    """CREATE TABLE IF NOT EXISTS chain_head (
        agent VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash VARCHAR NOT NULL
    )""",
    "CREATE SEQUENCE IF NOT EXISTS decision_seq START 1",
    # audit: what retention removed, so the chain still verifies (appliance.audit)
    """CREATE TABLE IF NOT EXISTS audit_checkpoints (
        agent VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL,
        through_seq BIGINT NOT NULL,
        last_hash VARCHAR NOT NULL,
        rows_removed BIGINT NOT NULL,
        before_day DATE NOT NULL
    )""",
    # audit: everything that is not a decision (policy reloads, endpoint changes...)
    """CREATE TABLE IF NOT EXISTS events (
        ts TIMESTAMP NOT NULL,
        type VARCHAR NOT NULL,
        agent VARCHAR,
        detail VARCHAR
    )""",
    # store: accepted messages, raw bytes included (appliance.store)
    """CREATE TABLE IF NOT EXISTS messages (
        email_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        mailbox VARCHAR NOT NULL,
        thread_id VARCHAR NOT NULL,
        message_id VARCHAR,
        subject VARCHAR,
        subject_key VARCHAR,
        sender VARCHAR,
        received_at TIMESTAMP NOT NULL,
        decision_id VARCHAR NOT NULL,
        keywords VARCHAR[],
        size BIGINT NOT NULL,
        raw BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages (message_id)",
    # limits: counted events and token charges (appliance.limits)
    """CREATE TABLE IF NOT EXISTS limit_events (
        key VARCHAR NOT NULL,
        ts DOUBLE NOT NULL,
        tokens BIGINT NOT NULL
    )""",
    # delivery: one job per message per agent, at least once (appliance.delivery)
    "CREATE SEQUENCE IF NOT EXISTS delivery_seq START 1",
    """CREATE TABLE IF NOT EXISTS deliveries (
        delivery_id VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        agent VARCHAR NOT NULL,
        event_type VARCHAR NOT NULL,
        email_id VARCHAR,
        decision_id VARCHAR,
        created_at TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at DOUBLE,
        last_status INTEGER,
        last_error VARCHAR,
        payload VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS delivery_attempts (
        delivery_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        ts TIMESTAMP NOT NULL,
        status INTEGER,
        latency_ms DOUBLE,
        error VARCHAR
    )""",
    """CREATE TABLE IF NOT EXISTS endpoints (
        agent VARCHAR PRIMARY KEY,
        disabled_at TIMESTAMP,
        reason VARCHAR
    )""",
]


def utc(unix: float | None = None) -> datetime:
    """A timestamp as the database keeps it: naive, in UTC (now when ``unix`` is None)."""
    moment = datetime.now(UTC) if unix is None else datetime.fromtimestamp(unix, UTC)
    return moment.replace(tzinfo=None)


class DatabaseLocked(Exception):
    """Another process (a running appliance) holds the database."""


class _Job:
    __slots__ = ("future", "work")

    def __init__(self, work: Work[object]) -> None:
        self.work = work
        self.future: Future[object] = Future()


_STOP = object()


class Database:
    """The DuckDB file of a running appliance, with its single writer thread."""

    max_batch = 256
    """Jobs committed together at most."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise DatabaseLocked(f"{path}: {exc}") from exc
        for ddl in SCHEMA:
            self._con.execute(ddl)
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        """Transactions committed (group commit makes this smaller than the jobs written)."""

    async def write(self, work: Work[T]) -> T:
        """Run ``work`` in a write transaction; return once it is committed (on disk)."""
        job = _Job(work)
        self._queue.put(job)
        return cast(T, await asyncio.wrap_future(job.future))

    def write_sync(self, work: Work[T]) -> T:
        """``write`` for callers outside the event loop."""
        job = _Job(work)
        self._queue.put(job)
        return cast(T, job.future.result())

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` on a cursor of its own in a worker thread."""
        return await asyncio.to_thread(self.read_sync, work)

    def read_sync(self, work: Work[T]) -> T:
        cursor = self._con.cursor()
        try:
            return work(cursor)
        finally:
            cursor.close()

    def close(self) -> None:
        """Finish queued writes, then checkpoint and close the file."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        with contextlib.suppress(duckdb.Error):
            self._con.execute("CHECKPOINT")
        self._con.close()

    def _run(self) -> None:
        con = self._con.cursor()
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(con, [j for j in batch if isinstance(j, _Job)])
            if stop:
                return

    def _commit(self, con: duckdb.DuckDBPyConnection, batch: list[_Job]) -> None:
        results: list[object] = []
        try:
            con.execute("BEGIN TRANSACTION")
            for job in batch:
                results.append(job.work(con))
            con.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # one bad job must not fail its neighbours: retry each alone
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if len(batch) > 1:
                for job in batch:
                    self._commit(con, [job])
            else:
                batch[0].future.set_exception(exc)
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)


@contextlib.contextmanager
def open_readonly(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the database for reading when no appliance holds it; DatabaseLocked otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no database yet (has the appliance run with this data_dir?)")
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        raise DatabaseLocked(f"{path}: {exc}") from exc
    try:
        yield con
    finally:
        con.close()
