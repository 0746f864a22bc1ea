"""States and the change log (RFC 8620 1.6, 5.2): every mutation advances its account's state.

Each account has one counter; every change takes the next number, and a
type's state is the number of its last change (``jmap_heads``). The state
string a client sees is ``<number>-<epoch>``: the epoch is drawn when the
account's JMAP view is first created, so a state from another database (a
restored backup, a wiped data_dir) is never taken for one of ours. States are
rows in the database, so ``/changes`` from any earlier state is the same
before and after a restart. Numbers are per account: the states one agent sees
say nothing about another account's activity.

``/changes`` reads the log: the ids changed after ``sinceState``, each
classified by whether it was created in that span and whether it exists now.
Retention (``prune``) removes rows older than ``RETENTION`` and raises the
type's floor: changes since a state below the floor are
``cannotCalculateChanges``.

Other rooms do not write here. A room that stores mail an agent may see
calls ``record_created`` in the transaction that stores it; the JMAP index
picks the message up from ``jmap_pending`` and records its changes (Email,
Thread, Mailbox counts, EmailDelivery) in the transaction that indexes it, so
a state never counts a message the index does not hold yet.
"""

from __future__ import annotations

__all__ = [
    "RETENTION",
    "TYPES",
    "AccountStates",
    "Change",
    "ChangeSet",
    "changes_since",
    "ensure_account",
    "format_state",
    "log_changes",
    "parse_state",
    "prune",
    "read_states",
    "record_created",
]

import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import duckdb
import msgspec

from appliance.store.database import Batch, utc

TYPES = ("Email", "Mailbox", "Thread", "EmailDelivery", "EmailSubmission")
"""The types whose changes are logged (Identity's state is derived from its content: ``identity``)."""
RETENTION = timedelta(days=30)
"""Changes are kept this long; ``/changes`` from an older state is ``cannotCalculateChanges``."""

_PENDING = ("agent", "type", "id", "ts")


def record_created(target: Batch | duckdb.DuckDBPyConnection, agent: str, type_: str, id_: str) -> None:
    """The hook for rooms that store mail an agent may read over JMAP: call it in the storing transaction.

    ``type_`` is ``"Email"`` and ``id_`` the stored message's ``email_id`` (a message in ``inbox`` or
    ``sent``; quarantined mail is not the agent's to see until it is released, so record it then).
    In a ``Batch`` it is one buffered row (no statement of its own on the hot path).
    """
    if type_ != "Email":
        raise ValueError(f"record_created: only Email records are taken from other rooms, not {type_!r}")
    row = (agent.lower(), type_, id_, utc())
    if isinstance(target, Batch):
        target.insert("jmap_pending", _PENDING, row)
    else:
        target.execute("INSERT INTO jmap_pending (agent, type, id, ts) VALUES (?, ?, ?, ?)", list(row))


class Change(NamedTuple):
    type: str
    id: str
    kind: str
    """``created``, ``updated``, ``destroyed``, or ``counts`` (only a Mailbox's counts changed)."""
    thread_id: str | None = None


class AccountStates(msgspec.Struct, frozen=True):
    epoch: str
    counter: int
    heads: dict[str, tuple[int, int]]
    """type -> (state, floor)."""

    def state(self, type_: str) -> str:
        return format_state(self.epoch, self.heads.get(type_, (0, 0))[0])


def format_state(epoch: str, number: int) -> str:
    return f"{number}-{epoch}"


def parse_state(value: str, epoch: str) -> int | None:
    """The number of a state string of this account's epoch; None when it is not one."""
    number, sep, of = value.partition("-")
    if not sep or of != epoch or not number.isascii() or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


def ensure_account(con: duckdb.DuckDBPyConnection, agent: str) -> bool:
    """Create the account's counter and heads if missing; True when it was created now."""
    if con.execute("SELECT 1 FROM jmap_accounts WHERE agent = ?", [agent]).fetchone():
        return False
    con.execute("INSERT INTO jmap_accounts (agent, epoch, counter) VALUES (?, ?, 0)", [agent, secrets.token_hex(4)])
    con.execute("INSERT INTO jmap_heads (agent, type, state, floor) SELECT ?, unnest(?::VARCHAR[]), 0, 0",
                [agent, list(TYPES)])
    return True


def read_states(con: duckdb.DuckDBPyConnection, agent: str) -> AccountStates | None:
    rows = con.execute("SELECT '', epoch, counter, 0 FROM jmap_accounts WHERE agent = ? UNION ALL "
                       "SELECT type, NULL, state, floor FROM jmap_heads WHERE agent = ?", [agent, agent]).fetchall()
    account = next((r for r in rows if r[0] == ""), None)
    if account is None:
        return None
    heads = {str(r[0]): (int(r[2]), int(r[3])) for r in rows if r[0] != ""}
    return AccountStates(epoch=str(account[1]), counter=int(account[2]), heads=heads)


def log_changes(con: duckdb.DuckDBPyConnection, agent: str, changes: Sequence[Change],
                now: datetime | None = None) -> dict[str, int]:
    """Give each change the account's next state number; return each type's new state."""
    if not changes:
        return {}
    row = con.execute("UPDATE jmap_accounts SET counter = counter + ? WHERE agent = ? RETURNING counter",
                      [len(changes), agent]).fetchone()
    if row is None:
        ensure_account(con, agent)
        return log_changes(con, agent, changes, now)
    first = int(row[0]) - len(changes) + 1
    states = list(range(first, first + len(changes)))
    con.execute(
        "INSERT INTO jmap_changes (seq, agent, type, state, id, kind, thread_id, ts) "
        "SELECT nextval('jmap_log_seq'), ?, c.t, c.s, c.i, c.k, c.th, ? FROM (SELECT unnest(?::VARCHAR[]) AS t, "
        "unnest(?::BIGINT[]) AS s, unnest(?::VARCHAR[]) AS i, unnest(?::VARCHAR[]) AS k, "
        "unnest(?::VARCHAR[]) AS th) AS c",
        [agent, now or utc(), [c.type for c in changes], states, [c.id for c in changes],
         [c.kind for c in changes], [c.thread_id for c in changes]])
    heads: dict[str, int] = {}
    for change, state in zip(changes, states, strict=True):
        heads[change.type] = state
    con.execute("UPDATE jmap_heads SET state = h.s FROM (SELECT unnest(?::VARCHAR[]) AS t, unnest(?::BIGINT[]) AS s) "
                "AS h WHERE jmap_heads.agent = ? AND jmap_heads.type = h.t", [list(heads), list(heads.values()), agent])
    return heads


class ChangeSet(msgspec.Struct, frozen=True, kw_only=True):
    created: list[str]
    updated: list[str]
    destroyed: list[str]
    new_state: int
    has_more: bool
    counts_only: bool
    """Every updated id changed only its counts (Mailbox/changes ``updatedProperties``)."""


class CannotCalculate(Exception):
    """``sinceState`` is not a state changes can be computed from (unknown, too old, or in the future)."""


def changes_since(con: duckdb.DuckDBPyConnection, agent: str, type_: str, since: int, states: AccountStates,
                  exists: Callable[[list[str]], set[str]], max_changes: int | None = None) -> ChangeSet:
    """The ids of ``type_`` changed after state ``since``, up to ``max_changes`` of them.

    ``exists(ids)`` says which ids exist now: an id created in the span is ``created`` if it still
    exists (and left out if not), any other ``updated`` if it exists, ``destroyed`` if not.
    """
    head, floor = states.heads.get(type_, (0, 0))
    if since < floor or since > states.counter:
        raise CannotCalculate
    rows = con.execute("SELECT id, kind, state FROM jmap_changes WHERE agent = ? AND type = ? AND state > ? "
                       "ORDER BY state", [agent, type_, since]).fetchall()
    kinds: dict[str, set[str]] = {}
    new_state, has_more = max(head, since), False
    for id_, kind, state in rows:
        if id_ not in kinds and max_changes is not None and len(kinds) >= max_changes:
            has_more = True
            break
        kinds.setdefault(str(id_), set()).add(str(kind))
        new_state = int(state)
    present = exists(list(kinds)) if kinds else set()
    created, updated, destroyed = [], [], []
    counts_only = True
    for id_, seen in kinds.items():
        if id_ in present:
            if "created" in seen:
                created.append(id_)
            else:
                updated.append(id_)
                counts_only = counts_only and seen <= {"counts"}
        elif "created" not in seen:
            destroyed.append(id_)
    return ChangeSet(created=created, updated=updated, destroyed=destroyed, new_state=new_state, has_more=has_more,
                     counts_only=counts_only and bool(updated))


def changed_rows(con: duckdb.DuckDBPyConnection, agent: str, type_: str,
                 since: int) -> list[tuple[str, str, str | None]]:
    """(id, kind, thread_id) of every change of ``type_`` after ``since``, oldest first (queryChanges)."""
    return [(str(i), str(k), t) for i, k, t in con.execute(
        "SELECT id, kind, thread_id FROM jmap_changes WHERE agent = ? AND type = ? AND state > ? ORDER BY state",
        [agent, type_, since]).fetchall()]


def latest_seq(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT max(seq) FROM jmap_changes").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def changed_after(con: duckdb.DuckDBPyConnection, seq: int) -> tuple[int, dict[str, set[str]]]:
    """The log's last position, and which types of which accounts changed after position ``seq`` (push)."""
    rows = con.execute("SELECT agent, type, max(seq) FROM jmap_changes WHERE seq > ? GROUP BY agent, type",
                       [seq]).fetchall()
    changed: dict[str, set[str]] = {}
    top = seq
    for agent, type_, at in rows:
        changed.setdefault(str(agent), set()).add(str(type_))
        top = max(top, int(at))
    return top, changed


def prune(con: duckdb.DuckDBPyConnection, now: datetime | None = None, keep: timedelta = RETENTION) -> int:
    """Remove changes older than ``keep``, raising each type's floor to the newest state removed."""
    horizon = (now or utc()) - keep
    con.execute("UPDATE jmap_heads SET floor = d.top FROM (SELECT agent, type, max(state) AS top FROM jmap_changes "
                "WHERE ts < ? GROUP BY agent, type) AS d WHERE jmap_heads.agent = d.agent AND "
                "jmap_heads.type = d.type AND d.top > jmap_heads.floor", [horizon])
    removed = con.execute("DELETE FROM jmap_changes WHERE ts < ? RETURNING 1", [horizon]).fetchall()
    return len(removed)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
