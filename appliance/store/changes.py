"""The JMAP states and their change log: per-account counters, each type's head and floor, the log itself,
and the mail other rooms queue for the JMAP index (``appliance.jmap.changes`` decides what they mean)."""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "AccountRow",
    "Change",
    "LoggedChange",
    "LoggedState",
    "LoggedThread",
    "PendingEmail",
    "account_exists",
    "advance_counter",
    "any_pending",
    "append_changes",
    "changed_ids_between",
    "clear_pending",
    "create_account",
    "delete_changes_before",
    "latest_seq",
    "log_after",
    "log_since",
    "log_threads_since",
    "pending",
    "queue_pending",
    "raise_floors",
    "read_account",
    "set_heads",
]

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import duckdb
import msgspec

from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("jmap_accounts", "jmap_heads", "jmap_log_seq", "jmap_changes", "jmap_pending"),
    ddl=(
        # jmap: per-account states and their change log, and mail waiting to be indexed (appliance.jmap.changes)
        """CREATE TABLE IF NOT EXISTS jmap_accounts (
        agent VARCHAR NOT NULL,
        epoch VARCHAR NOT NULL,          -- part of every state string: a rebuilt database never reuses one
        counter BIGINT NOT NULL          -- the account's last state number (all types share one counter)
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_heads (
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        state BIGINT NOT NULL,           -- the state number of the type's last change
        floor BIGINT NOT NULL            -- changes since an older state are gone (retention)
    )""",
        "CREATE SEQUENCE IF NOT EXISTS jmap_log_seq START 1",
        """CREATE TABLE IF NOT EXISTS jmap_changes (
        seq BIGINT NOT NULL,             -- position in the whole log (push reads what is new)
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        state BIGINT NOT NULL,
        id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,           -- created, updated, destroyed, counts (a Mailbox's counts only)
        thread_id VARCHAR,               -- an Email's thread (queryChanges with collapseThreads)
        ts TIMESTAMP NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_pending (
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        id VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL
    )""",
    ),
)


class Change(NamedTuple):
    """One change to log: a type's id and how it changed."""

    type: str
    id: str
    kind: str
    """``created``, ``updated``, ``destroyed``, or ``counts`` (only a Mailbox's counts changed)."""
    thread_id: str | None = None


class AccountRow(msgspec.Struct, frozen=True, kw_only=True):
    """An account's epoch and counter, and each type's (state, floor)."""

    epoch: str
    counter: int
    heads: dict[str, tuple[int, int]]


class LoggedState(msgspec.Struct, frozen=True):
    """A logged change of one type: its id, kind and state number."""

    id: str
    kind: str
    state: int


class LoggedThread(msgspec.Struct, frozen=True):
    """A logged change of one type: its id, kind and thread (queryChanges)."""

    id: str
    kind: str
    thread_id: str | None


class LoggedChange(msgspec.Struct, frozen=True):
    """Which type of which account changed, and the log's last position for it (push)."""

    agent: str
    type: str
    seq: int


class PendingEmail(msgspec.Struct, frozen=True):
    """A stored message queued for the JMAP index."""

    agent: str
    id: str


_PENDING = ("agent", "type", "id", "ts")


# -- accounts and heads ----------------------------------------------------------------------------


def account_exists(con: duckdb.DuckDBPyConnection, agent: str) -> bool:
    """Whether the account's counter exists."""
    return con.execute("SELECT 1 FROM jmap_accounts WHERE agent = ?", [agent]).fetchone() is not None


def create_account(con: duckdb.DuckDBPyConnection, agent: str, epoch: str, types: Sequence[str]) -> None:
    """Insert the account's counter (at 0) and a head (state and floor 0) for each of ``types``."""
    con.execute("INSERT INTO jmap_accounts (agent, epoch, counter) VALUES (?, ?, 0)", [agent, epoch])
    con.execute("INSERT INTO jmap_heads (agent, type, state, floor) SELECT ?, unnest(?::VARCHAR[]), 0, 0",
                [agent, list(types)])


def read_account(con: duckdb.DuckDBPyConnection, agent: str) -> AccountRow | None:
    """The account's epoch, counter and heads (one statement), or None when it has none."""
    rows = con.execute("SELECT '', epoch, counter, 0 FROM jmap_accounts WHERE agent = ? UNION ALL "
                       "SELECT type, NULL, state, floor FROM jmap_heads WHERE agent = ?", [agent, agent]).fetchall()
    account = next((r for r in rows if r[0] == ""), None)
    if account is None:
        return None
    heads = {str(r[0]): (int(r[2]), int(r[3])) for r in rows if r[0] != ""}
    return AccountRow(epoch=str(account[1]), counter=int(account[2]), heads=heads)


def advance_counter(con: duckdb.DuckDBPyConnection, agent: str, by: int) -> int | None:
    """Add ``by`` to the account's counter; its new value, or None when the account has none."""
    row = con.execute("UPDATE jmap_accounts SET counter = counter + ? WHERE agent = ? RETURNING counter",
                      [by, agent]).fetchone()
    return int(row[0]) if row is not None else None


def set_heads(con: duckdb.DuckDBPyConnection, agent: str, heads: Mapping[str, int]) -> None:
    """Set the state of each type in ``heads`` (type -> state)."""
    con.execute("UPDATE jmap_heads SET state = h.s FROM (SELECT unnest(?::VARCHAR[]) AS t, unnest(?::BIGINT[]) AS s) "
                "AS h WHERE jmap_heads.agent = ? AND jmap_heads.type = h.t", [list(heads), list(heads.values()), agent])


def raise_floors(con: duckdb.DuckDBPyConnection, horizon: datetime) -> None:
    """Raise each type's floor to the newest state logged before ``horizon`` (when that is higher)."""
    con.execute("UPDATE jmap_heads SET floor = d.top FROM (SELECT agent, type, max(state) AS top FROM jmap_changes "
                "WHERE ts < ? GROUP BY agent, type) AS d WHERE jmap_heads.agent = d.agent AND "
                "jmap_heads.type = d.type AND d.top > jmap_heads.floor", [horizon])


# -- the log ---------------------------------------------------------------------------------------


def append_changes(con: duckdb.DuckDBPyConnection, agent: str, changes: Sequence[Change], states: Sequence[int],
                   now: datetime) -> None:
    """Log ``changes``, each with its state number (``states``, in the same order), at the log's next positions."""
    con.execute(
        "INSERT INTO jmap_changes (seq, agent, type, state, id, kind, thread_id, ts) "
        "SELECT nextval('jmap_log_seq'), ?, c.t, c.s, c.i, c.k, c.th, ? FROM (SELECT unnest(?::VARCHAR[]) AS t, "
        "unnest(?::BIGINT[]) AS s, unnest(?::VARCHAR[]) AS i, unnest(?::VARCHAR[]) AS k, "
        "unnest(?::VARCHAR[]) AS th) AS c",
        [agent, now, [c.type for c in changes], list(states), [c.id for c in changes],
         [c.kind for c in changes], [c.thread_id for c in changes]])


def log_since(con: duckdb.DuckDBPyConnection, agent: str, type_: str, since: int) -> list[LoggedState]:
    """Every change of ``type_`` after state ``since``, oldest first."""
    rows = con.execute("SELECT id, kind, state FROM jmap_changes WHERE agent = ? AND type = ? AND state > ? "
                       "ORDER BY state", [agent, type_, since]).fetchall()
    return [LoggedState(str(i), str(k), int(s)) for i, k, s in rows]


def log_threads_since(con: duckdb.DuckDBPyConnection, agent: str, type_: str, since: int) -> list[LoggedThread]:
    """Every change of ``type_`` after state ``since`` with its thread, oldest first (queryChanges)."""
    return [LoggedThread(str(i), str(k), t) for i, k, t in con.execute(
        "SELECT id, kind, thread_id FROM jmap_changes WHERE agent = ? AND type = ? AND state > ? ORDER BY state",
        [agent, type_, since]).fetchall()]


def changed_ids_between(con: duckdb.DuckDBPyConnection, agent: str, type_: str, after: int, upto: int) -> list[str]:
    """The distinct ids of ``type_`` changed after state ``after`` and up to ``upto``."""
    return [str(r[0]) for r in con.execute(
        "SELECT DISTINCT id FROM jmap_changes WHERE agent = ? AND type = ? AND state > ? AND state <= ?",
        [agent, type_, after, upto]).fetchall()]


def latest_seq(con: duckdb.DuckDBPyConnection) -> int:
    """The log's last position (0 when it is empty)."""
    row = con.execute("SELECT max(seq) FROM jmap_changes").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def log_after(con: duckdb.DuckDBPyConnection, seq: int) -> list[LoggedChange]:
    """Each (account, type) changed after position ``seq``, with its last position."""
    rows = con.execute("SELECT agent, type, max(seq) FROM jmap_changes WHERE seq > ? GROUP BY agent, type",
                       [seq]).fetchall()
    return [LoggedChange(str(a), str(t), int(s)) for a, t, s in rows]


def delete_changes_before(con: duckdb.DuckDBPyConnection, horizon: datetime) -> int:
    """Remove the changes logged before ``horizon``; how many were removed."""
    return len(con.execute("DELETE FROM jmap_changes WHERE ts < ? RETURNING 1", [horizon]).fetchall())


# -- mail waiting for the index --------------------------------------------------------------------


def queue_pending(target: Batch | duckdb.DuckDBPyConnection, agent: str, type_: str, id_: str,
                  ts: datetime) -> None:
    """Queue one id for the index; in a ``Batch`` a buffered row (no statement of its own)."""
    row = (agent, type_, id_, ts)
    if isinstance(target, Batch):
        target.insert("jmap_pending", _PENDING, row)
    else:
        target.execute("INSERT INTO jmap_pending (agent, type, id, ts) VALUES (?, ?, ?, ?)", list(row))


def any_pending(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether anything waits in the queue."""
    row = con.execute("SELECT EXISTS (SELECT 1 FROM jmap_pending)").fetchone()
    return bool(row[0]) if row else False


def pending(con: duckdb.DuckDBPyConnection) -> list[PendingEmail]:
    """Everything queued for the index."""
    return [PendingEmail(str(a), str(i)) for a, i in con.execute("SELECT agent, id FROM jmap_pending").fetchall()]


def clear_pending(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> None:
    """Remove ``ids`` from the queue."""
    if ids:
        con.execute("DELETE FROM jmap_pending WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
