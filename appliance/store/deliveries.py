"""The delivery tables: one job per event per agent (webhook or stream), every attempt, disabled endpoints."""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "EmailEvent",
    "send_outcomes_of",
]

import duckdb
import msgspec

from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("delivery_seq", "deliveries", "delivery_attempts", "endpoints"),
    ddl=(
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
        round_start INTEGER NOT NULL DEFAULT 0,  -- attempts before the last replay
        next_attempt_at DOUBLE,
        last_status INTEGER,
        last_error VARCHAR,
        payload VARCHAR NOT NULL
    )""",
        # the writer appends jobs without naming seq (appliance.store.database.Batch): the sequence fills it
        "ALTER TABLE deliveries ALTER COLUMN seq SET DEFAULT nextval('delivery_seq')",
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
    ),
)

class EmailEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event raised about a message: its type and its JSON payload."""

    event_type: str
    payload: str


def send_outcomes_of(con: duckdb.DuckDBPyConnection, email_id: str) -> list[EmailEvent]:
    """The ``message.sent`` and ``message.bounced`` events of ``email_id``, oldest first (then by delivery id)."""
    return [EmailEvent(event_type=event_type, payload=payload) for event_type, payload in con.execute(
        "SELECT event_type, payload FROM deliveries WHERE email_id = ? AND event_type IN "
        "('message.sent', 'message.bounced') ORDER BY created_at, delivery_id", [email_id]).fetchall()]
