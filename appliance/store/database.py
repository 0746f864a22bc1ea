"""The writer of the appliance's one DuckDB file (the tables are declared by their owners: ``registry``).

One file so that a message, its audit row and its delivery job commit in one
transaction. DuckDB lets one process write, so a running appliance owns it:
every write goes through a single writer thread that groups the jobs queued
meanwhile into one transaction (group commit: one WAL fsync for many
messages, and the awaiting callers are answered only after COMMIT returned).
Reads run on their own cursors in worker threads.
"""

from __future__ import annotations

__all__ = [
    "Batch",
    "Database",
    "DatabaseClosed",
    "DatabaseCorrupt",
    "DatabaseLocked",
    "DatabaseUnavailable",
    "NextVal",
    "open_error",
    "private_dir",
    "private_file",
    "utc",
]

import asyncio
import contextlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import duckdb

log = logging.getLogger("appliance")

T = TypeVar("T")
Work = Callable[[duckdb.DuckDBPyConnection], T]



def utc(unix: float | None = None) -> datetime:
    """A timestamp as the database keeps it: naive, in UTC (now when ``unix`` is None)."""
    moment = datetime.now(UTC) if unix is None else datetime.fromtimestamp(unix, UTC)
    return moment.replace(tzinfo=None)


class DatabaseUnavailable(Exception):
    """The database file cannot be opened; the message says which file, what is wrong and what to do (one line)."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(message)


class DatabaseLocked(DatabaseUnavailable):
    """Another process (a running appliance, or an operator command) holds the database."""


class DatabaseCorrupt(DatabaseUnavailable):
    """The file is not a readable DuckDB database (garbage, truncated, damaged)."""


class DatabaseClosed(RuntimeError):
    """The database was closed: nothing more can be written (or read) through it."""


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<holder>.+?) \(PID (?P<pid>\d+)\)")
_DAMAGED = ("not a valid DuckDB database file", "Could not read enough bytes", "orrupt", "hecksum",
            "Serialization Error", "INTERNAL Error", "truncated")
"""What DuckDB says when the bytes of the file are not a database it can read."""


def _reason(path: Path, message: str) -> str:
    """DuckDB's message without its "IO Error: " prefix and the file name it repeats."""
    text = re.sub(r"^[A-Za-z ]+ Error: ", "", message)
    for name in {str(path), str(path.absolute()), str(path.resolve())}:
        text = text.replace(f'file "{name}"', "file").replace(f'"{name}"', "the file")
    return text[:300]


def open_error(path: Path, exc: BaseException) -> DatabaseUnavailable:
    """The one-line account of why ``path`` would not open: locked, damaged, or something else (permissions...).

    Only a lock conflict is blamed on another process: any other failure names what is wrong with the file.
    """
    message = " ".join(str(exc).split())
    if "Could not set lock on file" in message:
        holder = _LOCK_HOLDER.search(message)
        by = f" (PID {holder['pid']}, {holder['holder']})" if holder else ""
        return DatabaseLocked(path, f"{path} is in use by another process{by}: is an appliance already running "
                                    "with this data_dir? Stop it, or give this one another data_dir")
    if any(marker in message for marker in _DAMAGED):
        return DatabaseCorrupt(path, f"{path} is damaged and cannot be read ({_reason(path, message)}); "
                                     f"restore it from a backup: with the appliance stopped, copy the backup over "
                                     f"{path}, delete {path}.wal if present, and start again "
                                     "(or move the damaged file aside to start with an empty database)")
    return DatabaseUnavailable(path, f"cannot open {path}: {_reason(path, message)}")


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if need be; ``path`` itself is made 0700 whatever the umask."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o777 != 0o700:
        try:
            os.chmod(path, 0o700)
        except PermissionError:  # not ours (a directory an operator shares on purpose): say so, carry on
            log.warning("%s is not private (mode %o) and cannot be made so: not its owner", path,
                        path.stat().st_mode & 0o777)


def private_file(path: Path) -> None:
    """Make an existing file 0600 (owner read/write only); a missing one is ignored, a failure logged."""
    try:
        if os.stat(path).st_mode & 0o777 != 0o600:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
    except OSError as exc:  # never let a mode change fail the write it follows
        log.warning("%s could not be made private (0600): %s", path, exc.strerror)


class NextVal:
    """A column value drawn from a sequence when the row is inserted (``nextval('name')``)."""

    __slots__ = ("sequence",)

    def __init__(self, sequence: str) -> None:
        self.sequence = sequence


class Batch:
    """The open transaction of one group commit, as each job in it sees it.

    DuckDB answers any single statement in a few hundred microseconds, and the
    first rows a transaction writes to a table cost it about a millisecond
    whatever their number, so the hot path does not run statements per
    message: ``insert`` buffers rows and ``flush`` writes each table's rows
    through one appender (kept across batches), ``execute`` runs a statement
    the batch itself watches. Reading ``con`` flushes first, so statements
    always see the rows queued before them. ``memo`` holds the writer's caches
    across batches; it is emptied on rollback.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, memo: dict[str, Any]) -> None:
        self._con = con
        self.memo = memo
        self._rows: dict[tuple[str, tuple[str, ...]], list[Sequence[object]]] = {}
        self._before_commit: dict[str, Callable[[Batch], None]] = {}
        self.scratch: dict[str, Any] = {}
        """Per-batch state of the jobs in it (e.g. updates to apply together before COMMIT)."""
        self.exposed = False
        """Whether the connection was handed out: a statement run on it may have failed unseen."""
        self.failed: BaseException | None = None
        """The first statement the batch ran that failed (the transaction is aborted then)."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection, with every buffered row written."""
        self.flush()
        self.exposed = True
        return self._con

    def insert(self, table: str, columns: tuple[str, ...], row: Sequence[object]) -> None:
        """Queue one row; it is written before the next ``con`` use or the commit."""
        self._rows.setdefault((table, columns), []).append(row)

    def execute(self, sql: str, parameters: Sequence[object] | None = None) -> duckdb.DuckDBPyConnection:
        """Run one statement after the buffered rows; its failure fails the batch even if the caller catches it."""
        self.flush()
        try:
            return self._con.execute(sql, parameters)
        except BaseException as exc:
            self.failed = self.failed or exc
            raise

    def before_commit(self, key: str, hook: Callable[[Batch], None]) -> None:
        """Run ``hook`` once, after the last job of this batch and before COMMIT."""
        self._before_commit.setdefault(key, hook)

    def flush(self) -> None:
        """Write the buffered rows: each table's through its appender, one statement for all of its rows."""
        rows, self._rows = self._rows, {}
        for (table, columns), pending in rows.items():
            try:
                self._append(table, columns, pending)
            except BaseException as exc:
                self.failed = self.failed or exc
                raise

    def _append(self, table: str, columns: tuple[str, ...], pending: list[Sequence[object]]) -> None:
        sequenced = tuple(i for i, v in enumerate(pending[0]) if isinstance(v, NextVal))
        appender, keep, drawn = self._appender(table, columns, pending[0], sequenced)
        if drawn:  # sequence columns without the sequence as their default: draw the values first
            for i in drawn:
                sequence = cast(NextVal, pending[0][i]).sequence
                values = [r[0] for r in self._con.execute(
                    f"SELECT nextval('{sequence}') FROM range(?)", [len(pending)]).fetchall()]
                pending = [(*row[:i], value, *row[i + 1:]) for row, value in zip(pending, values, strict=True)]
        appender.append_rows(pending if keep is None else [[row[i] for i in keep] for row in pending])
        # A result left unread (a fetchone() of a streaming SELECT) would refuse the flush; a
        # new statement would have dropped it too.
        self._con.complete()
        appender.flush()

    def _appender(self, table: str, columns: tuple[str, ...], sample: Sequence[object],
                  sequenced: tuple[int, ...]) -> tuple[Any, list[int] | None, tuple[int, ...]]:
        """The table's appender for these columns (created once per connection and kept in ``memo``).

        A ``NextVal`` column whose default is that very sequence is left out, DuckDB filling it
        row by row; any other is drawn from the sequence before the rows are appended.
        """
        key = f"db.appender:{table}:{','.join(columns)}:{sequenced}"
        cached = self.memo.get(key)
        if cached is not None and cached[0] is self._con:
            return cast(tuple[Any, list[int] | None, tuple[int, ...]], cached[1:])
        defaults = dict(self._con.execute(
            "SELECT column_name, column_default FROM information_schema.columns WHERE table_name = ?",
            [table]).fetchall()) if sequenced else {}
        omitted = {i for i in sequenced if _is_nextval(defaults.get(columns[i]), cast(NextVal, sample[i]).sequence)}
        drawn = tuple(i for i in sequenced if i not in omitted)
        keep = [i for i in range(len(columns)) if i not in omitted] if omitted else None
        appender = self._con.appender(table, columns=[columns[i] for i in (keep if keep is not None else
                                                                             range(len(columns)))])
        self.memo[key] = (self._con, appender, keep, drawn)
        return appender, keep, drawn

    def finish(self) -> None:
        while self._before_commit:
            hooks, self._before_commit = self._before_commit, {}
            for hook in hooks.values():
                hook(self)
        self.flush()


def _is_nextval(default: object, sequence: str) -> bool:
    """Whether a column default (as information_schema spells it) is ``nextval('sequence')``."""
    return isinstance(default, str) and re.sub(r'[\s"]', "", default).lower() == f"nextval('{sequence.lower()}')"


class _Job:
    __slots__ = ("batched", "future", "work")

    def __init__(self, work: Callable[[Any], object], *, batched: bool) -> None:
        self.work = work
        self.batched = batched
        self.future: Future[object] = Future()


_STOP = object()


class Database:
    """The DuckDB file of a running appliance, with its single writer thread."""

    max_batch = 256
    """Jobs committed together at most."""
    checkpoint_threshold = "64MB"
    """WAL size at which DuckDB checkpoints (its default is 16 MB). A checkpoint rewrites each table's
    last row group whole, raw message bytes included, so it costs about the table's newest rows,
    not what the WAL holds: fewer of them is what makes large messages cheaper (bench/writer.py).
    A crash replays at most this much WAL on the next start."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the file; ``DatabaseUnavailable`` (locked, damaged, other) says why it would not.

        The directory is made 0700 and the file and its WAL 0600, whatever the umask: they hold the mail.
        """
        try:
            private_dir(path.parent)
        except OSError as exc:
            raise DatabaseUnavailable(path, f"cannot create {path.parent}: {exc.strerror}") from None
        self.path = path
        self._wal = path.with_name(path.name + ".wal")
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise open_error(path, exc) from None  # the message is the whole story: no chained traceback
        try:
            self._con.execute(f"SET checkpoint_threshold = '{self.checkpoint_threshold}'")
            # imported here: the families' modules import this one (Batch, utc)
            from appliance.store.registry import FAMILIES

            for family in FAMILIES:
                for ddl in family.ddl:
                    self._con.execute(ddl)
        except duckdb.Error as exc:
            self._con.close()
            raise open_error(path, exc) from None
        private_file(path)
        private_file(self._wal)
        self._memo: dict[str, Any] = {}
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._closed = False
        self._closing = threading.Lock()
        """Held while a job is queued and while the writer is told to stop: no job is queued after the stop."""
        self._thread = threading.Thread(target=self._run, name="db-writer", daemon=True)
        self._thread.start()
        self.commits = 0
        """Transactions committed (group commit makes this smaller than the jobs written)."""

    async def write(self, work: Work[T]) -> T:
        """Run ``work(con)`` in a write transaction; return once it is committed (on disk)."""
        return cast(T, await self._submit(_Job(work, batched=False)))

    async def write_batch(self, work: Callable[[Batch], T]) -> T:
        """Run ``work(batch)`` in a write transaction (the hot path); return once committed."""
        return cast(T, await self._submit(_Job(work, batched=True)))

    def _enqueue(self, job: _Job) -> None:
        with self._closing:
            if self._closed:
                raise DatabaseClosed(f"{self.path} is closed: the write was not made")
            self._queue.put(job)

    async def _submit(self, job: _Job) -> object:
        self._enqueue(job)
        return await asyncio.wrap_future(job.future)

    def write_sync(self, work: Work[T]) -> T:
        """``write`` for callers outside the event loop."""
        return cast(T, self._submit_sync(_Job(work, batched=False)))

    def write_batch_sync(self, work: Callable[[Batch], T]) -> T:
        """``write_batch`` for callers outside the event loop."""
        return cast(T, self._submit_sync(_Job(work, batched=True)))

    def _submit_sync(self, job: _Job) -> object:
        self._enqueue(job)
        return job.future.result()

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` on a cursor of its own in a worker thread."""
        return await asyncio.to_thread(self.read_sync, work)

    def read_sync(self, work: Work[T]) -> T:
        if self._closed:
            raise DatabaseClosed(f"{self.path} is closed: nothing can be read through it")
        cursor = self._con.cursor()
        try:
            return work(cursor)
        finally:
            cursor.close()

    def close(self) -> None:
        """Finish queued writes, then checkpoint and close the file; later writes raise ``DatabaseClosed``."""
        with self._closing:
            already = self._closed
            self._closed = True
            if not already:
                self._queue.put(_STOP)
        self._thread.join()
        if already:
            return
        self._memo.clear()  # the writer's appenders go before their connection
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

    def _commit(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job]) -> None:
        results: list[object] = []
        try:
            con.execute("BEGIN TRANSACTION")
            batch = Batch(con, self._memo)
            for job in jobs:
                results.append(job.work(batch) if job.batched else job.work(batch.con))
            batch.finish()
            # DuckDB's COMMIT of a transaction that a failed statement aborted rolls it back
            # silently; a job that caught its own error would get every caller of the batch told
            # "committed". The statements the batch ran itself say so; if the connection was
            # handed out, any statement raises in an aborted transaction: ask before committing.
            if batch.failed is not None:
                raise batch.failed
            if batch.exposed:  # every unbatched job was handed the connection
                con.execute("SELECT 1")
            con.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # one bad job must not fail its neighbours: retry each alone
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            self._memo.clear()  # caches may hold what was rolled back
            if len(jobs) > 1:
                for job in jobs:
                    self._commit(con, [job])
            else:
                with contextlib.suppress(InvalidStateError):  # the caller gave up (cancelled)
                    jobs[0].future.set_exception(exc)
            return
        private_file(self._wal)  # DuckDB deletes the WAL at each checkpoint and creates it anew under the umask
        for job, result in zip(jobs, results, strict=True):
            with contextlib.suppress(InvalidStateError):  # a caller that gave up still got its commit
                job.future.set_result(result)
