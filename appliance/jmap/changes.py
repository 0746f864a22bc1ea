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

import duckdb
import msgspec

from appliance.store import changes as change_log
from appliance.store.changes import Change
from appliance.store.database import Batch, utc

TYPES = ("Email", "Mailbox", "Thread", "EmailDelivery", "EmailSubmission")
"""The types whose changes are logged (Identity's state is derived from its content: ``identity``)."""
RETENTION = timedelta(days=30)
"""Changes are kept this long; ``/changes`` from an older state is ``cannotCalculateChanges``."""


def record_created(target: Batch | duckdb.DuckDBPyConnection, agent: str, type_: str, id_: str) -> None:
    """The hook for rooms that store mail an agent may read over JMAP: call it in the storing transaction.

    ``type_`` is ``"Email"`` and ``id_`` the stored message's ``email_id`` (a message in ``inbox`` or
    ``sent``; quarantined mail is not the agent's to see until it is released, so record it then).
    In a ``Batch`` it is one buffered row (no statement of its own on the hot path).
    """
    if type_ != "Email":
        raise ValueError(f"record_created: only Email records are taken from other rooms, not {type_!r}")
    change_log.queue_pending(target, agent.lower(), type_, id_, utc())


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
    if change_log.account_exists(con, agent):
        return False
    change_log.create_account(con, agent, secrets.token_hex(4), TYPES)
    return True


def read_states(con: duckdb.DuckDBPyConnection, agent: str) -> AccountStates | None:
    account = change_log.read_account(con, agent)
    if account is None:
        return None
    return AccountStates(epoch=account.epoch, counter=account.counter, heads=account.heads)


def log_changes(con: duckdb.DuckDBPyConnection, agent: str, changes: Sequence[Change],
                now: datetime | None = None) -> dict[str, int]:
    """Give each change the account's next state number; return each type's new state."""
    if not changes:
        return {}
    counter = change_log.advance_counter(con, agent, len(changes))
    if counter is None:
        ensure_account(con, agent)
        return log_changes(con, agent, changes, now)
    first = counter - len(changes) + 1
    states = list(range(first, first + len(changes)))
    change_log.append_changes(con, agent, changes, states, now or utc())
    heads: dict[str, int] = {}
    for change, state in zip(changes, states, strict=True):
        heads[change.type] = state
    change_log.set_heads(con, agent, heads)
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
    kinds: dict[str, set[str]] = {}
    new_state, has_more = max(head, since), False
    for logged in change_log.log_since(con, agent, type_, since):
        if logged.id not in kinds and max_changes is not None and len(kinds) >= max_changes:
            has_more = True
            break
        kinds.setdefault(logged.id, set()).add(logged.kind)
        new_state = logged.state
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


def changed_after(con: duckdb.DuckDBPyConnection, seq: int) -> tuple[int, dict[str, set[str]]]:
    """The log's last position, and which types of which accounts changed after position ``seq`` (push)."""
    changed: dict[str, set[str]] = {}
    top = seq
    for logged in change_log.log_after(con, seq):
        changed.setdefault(logged.agent, set()).add(logged.type)
        top = max(top, logged.seq)
    return top, changed


def prune(con: duckdb.DuckDBPyConnection, now: datetime | None = None, keep: timedelta = RETENTION) -> int:
    """Remove changes older than ``keep``, raising each type's floor to the newest state removed."""
    horizon = (now or utc()) - keep
    change_log.raise_floors(con, horizon)
    return change_log.delete_changes_before(con, horizon)


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
