"""What the appliance keeps of Stalwart: the objects it set up there, and where it is in each account's
changes (the follower's cursor).

The statements only: ``appliance.stalwart.provision`` decides what to record and
``appliance.stalwart.follower`` how a cursor moves.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "Cursor",
    "StalwartKey",
    "cursor",
    "forget_object",
    "record_object",
    "recorded_objects",
    "save_cursor",
    "stalwart_keys",
]

from datetime import datetime

import duckdb
import msgspec

from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("stalwart_objects", "stalwart_cursors"),
    ddl=(
        # One row per object the appliance made in Stalwart: "hook", "account:<agent>", "api-key:<agent>".
        # ``secret`` is kept only for what the appliance itself presents (its API keys); ``fingerprint``
        # says which secret Stalwart was given where it does not show it back.
        """CREATE TABLE IF NOT EXISTS stalwart_objects (
        key VARCHAR PRIMARY KEY,
        object_id VARCHAR NOT NULL,
        fingerprint VARCHAR,
        secret VARCHAR,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS stalwart_cursors (
        agent VARCHAR PRIMARY KEY,
        account_id VARCHAR NOT NULL,
        email_state VARCHAR,
        last_received_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    ),
)


class RecordedObject(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    object_id: str
    fingerprint: str | None
    secret: str | None


class StalwartKey(msgspec.Struct, frozen=True, kw_only=True):
    """The API key the appliance presents for one agent's account."""

    agent: str
    account_id: str
    secret: str


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where the follower is in one account: the last ``Email`` state it fully handled."""

    agent: str
    account_id: str
    email_state: str | None
    last_received_at: datetime | None


def record_object(batch: Batch, key: str, object_id: str, *, fingerprint: str | None, secret: str | None,
                  now: datetime) -> None:
    """Record (or replace) what the appliance made in Stalwart under ``key``."""
    batch.execute("INSERT OR REPLACE INTO stalwart_objects VALUES (?, ?, ?, ?, ?)",
                  [key, object_id, fingerprint, secret, now])


def forget_object(batch: Batch, key: str, object_id: str) -> None:
    """Forget ``key`` if it still records ``object_id``."""
    batch.execute("DELETE FROM stalwart_objects WHERE key = ? AND object_id = ?", [key, object_id])


def recorded_objects(con: duckdb.DuckDBPyConnection) -> dict[str, RecordedObject]:
    rows = con.execute("SELECT key, object_id, fingerprint, secret FROM stalwart_objects").fetchall()
    return {r[0]: RecordedObject(key=r[0], object_id=r[1], fingerprint=r[2], secret=r[3]) for r in rows}


def stalwart_keys(con: duckdb.DuckDBPyConnection) -> list[StalwartKey]:
    """Every agent's account id and the appliance's API key for it."""
    rows = con.execute(
        "SELECT substr(k.key, 9), a.object_id, k.secret FROM stalwart_objects k "
        "JOIN stalwart_objects a ON a.key = 'account:' || substr(k.key, 9) "
        "WHERE k.key LIKE 'api-key:%' AND k.secret IS NOT NULL ORDER BY 1").fetchall()
    return [StalwartKey(agent=r[0], account_id=r[1], secret=r[2]) for r in rows]


def cursor(con: duckdb.DuckDBPyConnection, agent: str) -> Cursor | None:
    row = con.execute("SELECT agent, account_id, email_state, last_received_at FROM stalwart_cursors "
                      "WHERE agent = ?", [agent]).fetchone()
    return Cursor(agent=row[0], account_id=row[1], email_state=row[2], last_received_at=row[3]) if row else None


def save_cursor(batch: Batch, value: Cursor, now: datetime) -> None:
    batch.execute("INSERT OR REPLACE INTO stalwart_cursors VALUES (?, ?, ?, ?, ?)",
                  [value.agent, value.account_id, value.email_state, value.last_received_at, now])
