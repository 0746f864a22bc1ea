"""The delivery tables: one job per event per agent (webhook or stream), every attempt, disabled endpoints.

The statements only: what a status means, when to retry and who may see what
is decided by ``appliance.delivery``, which calls these inside the
transaction (or open batch) it already has.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "Attempt",
    "DeliveryCount",
    "DeliveryRecord",
    "DeliveryState",
    "DisabledEndpoint",
    "DueDelivery",
    "EmailEvent",
    "StoredDelivery",
    "StreamRow",
    "add_delivery",
    "any_pending",
    "attempts_of",
    "deliveries_of_decision",
    "delivery_counts",
    "delivery_state",
    "disable_endpoint",
    "disabled_agents",
    "disabled_endpoints",
    "discard_held",
    "due_deliveries",
    "endpoint_disabled",
    "expire_awaiting",
    "get_delivery",
    "label_stream_only",
    "list_deliveries",
    "make_due",
    "next_attempt_after",
    "oldest_awaiting",
    "record_attempt",
    "record_delivered",
    "reenable_endpoint",
    "release_awaiting",
    "release_held",
    "remove_finished",
    "replay_delivery",
    "send_outcomes_of",
    "seq_of_delivery",
    "settle_attempt",
    "visible_after",
]

from collections.abc import Sequence
from datetime import datetime

import duckdb
import msgspec

from appliance.store.database import Batch, NextVal
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


# -- rows -------------------------------------------------------------------------------------


class DueDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A pending delivery whose attempt is due, as the dispatcher claims it."""

    delivery_id: str
    agent: str
    event_type: str
    email_id: str | None
    created_at: datetime
    attempts: int
    round_start: int
    payload: str


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt at a delivery: its answer's status (None: no answer), latency and error."""

    delivery_id: str
    attempt: int
    ts: datetime
    status: int | None
    latency_ms: float | None
    error: str | None


class DeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery without its payload, for listings."""

    delivery_id: str
    seq: int
    agent: str
    event_type: str
    email_id: str | None
    decision_id: str | None
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: float | None
    """Unix seconds, as stored (also left over on jobs that are no longer pending)."""
    last_status: int | None
    last_error: str | None


class StoredDelivery(DeliveryRecord, frozen=True, kw_only=True):
    """A delivery, payload included."""

    payload: str


class DeliveryState(msgspec.Struct, frozen=True, kw_only=True):
    """Whose a delivery is, where it stands and how many attempts it has had."""

    agent: str
    status: str
    attempts: int


class DisabledEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's webhook turned off (after a 410), when and why."""

    agent: str
    disabled_at: datetime
    reason: str | None


class StreamRow(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery as the event stream reads it."""

    seq: int
    delivery_id: str
    event_type: str
    created_at: datetime
    payload: str


class DeliveryCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many deliveries an agent has of one event type in one status."""

    agent: str
    event_type: str
    status: str
    count: int


# -- jobs ---------------------------------------------------------------------------------------

_COLUMNS = ("delivery_id", "seq", "agent", "event_type", "email_id", "decision_id", "created_at", "status",
            "attempts", "next_attempt_at", "payload")


def add_delivery(batch: Batch, *, delivery_id: str, agent: str, event_type: str, email_id: str | None,
                 decision_id: str | None, created_at: datetime, status: str, next_attempt_at: float,
                 payload: str) -> None:
    """Queue one job in the open batch, no attempts yet, its ``seq`` drawn from ``delivery_seq``."""
    batch.insert("deliveries", _COLUMNS, (delivery_id, NextVal("delivery_seq"), agent, event_type, email_id,
                                          decision_id, created_at, status, 0, next_attempt_at, payload))


def release_held(con: duckdb.DuckDBPyConnection, email_id: str, now: float) -> int:
    """Make a message's held jobs pending, due at ``now``, with a fresh ``seq``; return how many."""
    rows = con.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, seq = nextval('delivery_seq') "
        "WHERE email_id = ? AND status = 'held' RETURNING delivery_id", [now, email_id]).fetchall()
    return len(rows)


def release_awaiting(con: duckdb.DuckDBPyConnection, agent: str, decision_ids: list[str], now: float) -> int:
    """Make the awaiting jobs of ``agent``'s decisions pending, due at ``now``, with a fresh ``seq``;
    return how many (a job already released is not touched again)."""
    rows = con.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, seq = nextval('delivery_seq') "
        "WHERE agent = ? AND status = 'awaiting' AND list_contains(?::VARCHAR[], decision_id) "
        "RETURNING delivery_id", [now, agent, decision_ids]).fetchall()
    return len(rows)


def oldest_awaiting(con: duckdb.DuckDBPyConnection, agent: str) -> datetime | None:
    """When ``agent``'s oldest awaiting job was written, or None."""
    row = con.execute("SELECT min(created_at) FROM deliveries WHERE agent = ? AND status = 'awaiting'",
                      [agent]).fetchone()
    return row[0] if row else None


def expire_awaiting(con: duckdb.DuckDBPyConnection, before: datetime) -> int:
    """Discard awaiting jobs written before ``before`` (the MTA never stored their message); how many."""
    return len(con.execute("UPDATE deliveries SET status = 'discarded' WHERE status = 'awaiting' AND created_at < ? "
                           "RETURNING delivery_id", [before]).fetchall())


def discard_held(con: duckdb.DuckDBPyConnection, email_id: str) -> None:
    """Mark a message's held jobs discarded."""
    con.execute("UPDATE deliveries SET status = 'discarded' WHERE email_id = ? AND status = 'held'", [email_id])


def remove_finished(con: duckdb.DuckDBPyConnection, *, agent: str, before: datetime) -> None:
    """Delete the agent's delivered, discarded and stream-only jobs created before ``before``, attempts first."""
    con.execute("DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries "
                "WHERE agent = ? AND status IN ('delivered', 'discarded', 'stream') AND created_at < ?)",
                [agent, before])
    con.execute("DELETE FROM deliveries WHERE agent = ? AND status IN ('delivered', 'discarded', 'stream') "
                "AND created_at < ?", [agent, before])


# -- the dispatcher -----------------------------------------------------------------------------

_CLAIM = """
SELECT delivery_id, agent, event_type, email_id, created_at, attempts, round_start, payload
FROM deliveries
WHERE status = 'pending' AND next_attempt_at <= ? AND list_contains(?::VARCHAR[], agent)
  AND NOT list_contains(?::VARCHAR[], delivery_id)
QUALIFY row_number() OVER (PARTITION BY agent ORDER BY next_attempt_at, seq) <= ?
ORDER BY next_attempt_at, seq
"""
_DUE = tuple(DueDelivery.__struct_fields__)


def due_deliveries(con: duckdb.DuckDBPyConnection, *, now: float, agents: list[str], skip: list[str],
                   per_agent: int) -> list[DueDelivery]:
    """The ``agents``' pending jobs due by ``now``, ``skip`` left out, at most ``per_agent`` each, oldest due first."""
    rows = con.execute(_CLAIM, [now, agents, skip, per_agent]).fetchall()
    return [DueDelivery(**dict(zip(_DUE, row, strict=True))) for row in rows]


def next_attempt_after(con: duckdb.DuckDBPyConnection, *, agents: list[str], now: float) -> float | None:
    """When the ``agents``' next pending job after ``now`` is due (unix seconds), or None."""
    row = con.execute(
        "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending' "
        "AND list_contains(?::VARCHAR[], agent) AND next_attempt_at > ?", [agents, now]).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def any_pending(con: duckdb.DuckDBPyConnection, agents: list[str]) -> bool:
    """Whether any of the ``agents`` has a pending job."""
    return con.execute(
        "SELECT 1 FROM deliveries WHERE status = 'pending' AND list_contains(?::VARCHAR[], agent) LIMIT 1",
        [agents]).fetchone() is not None


def label_stream_only(con: duckdb.DuckDBPyConnection, agents: list[str]) -> None:
    """Relabel the ``agents``' pending jobs ``stream`` (read on the event stream only), due never."""
    con.execute("UPDATE deliveries SET status = 'stream', next_attempt_at = NULL "
                "WHERE status = 'pending' AND list_contains(?::VARCHAR[], agent)", [agents])


_ATTEMPT_COLUMNS = tuple(Attempt.__struct_fields__)
_DELIVERED = "delivery.delivered"


def record_delivered(batch: Batch, attempt: Attempt) -> None:
    """A 2xx in the open batch: the attempt row, and its job marked delivered with the rest of the batch's."""
    batch.insert("delivery_attempts", _ATTEMPT_COLUMNS, (
        attempt.delivery_id, attempt.attempt, attempt.ts, attempt.status, attempt.latency_ms, attempt.error))
    batch.scratch.setdefault(_DELIVERED, []).append({"id": attempt.delivery_id, "status": attempt.status})
    batch.before_commit(_DELIVERED, _mark_delivered)


def _mark_delivered(batch: Batch) -> None:
    delivered = batch.scratch.pop(_DELIVERED, [])
    if not delivered:
        return
    # One UPDATE for the whole batch; a delivery replayed or discarded meanwhile is not pending: left alone.
    batch.con.execute(
        "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, last_status = d.r.status, "
        "last_error = NULL, next_attempt_at = NULL "
        "FROM (SELECT unnest(from_json(?::JSON, '[{\"id\": \"VARCHAR\", \"status\": \"INTEGER\"}]')) AS r) d "
        "WHERE deliveries.delivery_id = d.r.id AND deliveries.status = 'pending'",
        [msgspec.json.encode(delivered).decode()])


def record_attempt(con: duckdb.DuckDBPyConnection, attempt: Attempt) -> None:
    """Insert one attempt row."""
    con.execute("INSERT INTO delivery_attempts (delivery_id, attempt, ts, status, latency_ms, error) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [attempt.delivery_id, attempt.attempt, attempt.ts, attempt.status, attempt.latency_ms,
                 attempt.error])


def settle_attempt(con: duckdb.DuckDBPyConnection, delivery_id: str, *, status: str, last_status: int | None,
                   last_error: str | None, next_attempt_at: float | None) -> bool:
    """Count one more attempt on a pending job and set its new state; False when it was no longer pending."""
    return bool(con.execute(
        "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?, "
        "next_attempt_at = ? WHERE delivery_id = ? AND status = 'pending' RETURNING delivery_id",
        [status, last_status, last_error, next_attempt_at, delivery_id]).fetchall())


# -- endpoints ----------------------------------------------------------------------------------


def disabled_agents(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The agents whose webhook is disabled."""
    return {r[0] for r in con.execute("SELECT agent FROM endpoints WHERE disabled_at IS NOT NULL").fetchall()}


def disabled_endpoints(con: duckdb.DuckDBPyConnection) -> list[DisabledEndpoint]:
    """Every disabled webhook, with when and why."""
    return [DisabledEndpoint(agent=agent, disabled_at=at, reason=reason) for agent, at, reason in con.execute(
        "SELECT agent, disabled_at, reason FROM endpoints WHERE disabled_at IS NOT NULL").fetchall()]


def endpoint_disabled(con: duckdb.DuckDBPyConnection, agent: str) -> bool:
    """Whether the agent's webhook is disabled."""
    return con.execute("SELECT 1 FROM endpoints WHERE agent = ? AND disabled_at IS NOT NULL",
                       [agent]).fetchone() is not None


def disable_endpoint(con: duckdb.DuckDBPyConnection, agent: str, *, at: datetime, reason: str) -> None:
    """Mark the agent's webhook disabled at ``at`` for ``reason`` (a row written or overwritten)."""
    con.execute("INSERT INTO endpoints (agent, disabled_at, reason) VALUES (?, ?, ?) "
                "ON CONFLICT (agent) DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
                [agent, at, reason])


def reenable_endpoint(con: duckdb.DuckDBPyConnection, agent: str, *, reason: str) -> bool:
    """Clear the agent's disabled mark, keeping ``reason``; False when it was not disabled."""
    return bool(con.execute("UPDATE endpoints SET disabled_at = NULL, reason = ? WHERE agent = ? "
                            "AND disabled_at IS NOT NULL RETURNING agent", [reason, agent]).fetchall())


# -- the operator's view ------------------------------------------------------------------------

_RECORD = tuple(DeliveryRecord.__struct_fields__)
_SUMMARY = ", ".join(_RECORD)


def list_deliveries(con: duckdb.DuckDBPyConnection, *, status: str | None, agent: str | None,
                    event_type: str | None, before: int | None, limit: int) -> list[DeliveryRecord]:
    """Newest ``seq`` first, filtered by whichever of status, agent, event type and ``seq < before`` are given."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("status", status), ("agent", agent), ("event_type", event_type)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = con.execute(f"SELECT {_SUMMARY} FROM deliveries {clause} ORDER BY seq DESC LIMIT ?",
                       [*args, limit]).fetchall()
    return [DeliveryRecord(**dict(zip(_RECORD, row, strict=True))) for row in rows]


def get_delivery(con: duckdb.DuckDBPyConnection, delivery_id: str) -> StoredDelivery | None:
    """One delivery, payload included, or None."""
    row = con.execute(f"SELECT {_SUMMARY}, payload FROM deliveries WHERE delivery_id = ?",
                      [delivery_id]).fetchone()
    return None if row is None else StoredDelivery(**dict(zip((*_RECORD, "payload"), row, strict=True)))


def attempts_of(con: duckdb.DuckDBPyConnection, delivery_id: str) -> list[Attempt]:
    """A delivery's attempts, in order."""
    return [Attempt(delivery_id=delivery_id, attempt=a, ts=ts, status=s, latency_ms=lat, error=err)
            for a, ts, s, lat, err in con.execute(
                "SELECT attempt, ts, status, latency_ms, error FROM delivery_attempts WHERE delivery_id = ? "
                "ORDER BY attempt, ts", [delivery_id]).fetchall()]


def delivery_state(con: duckdb.DuckDBPyConnection, delivery_id: str) -> DeliveryState | None:
    """A delivery's agent, status and attempts, or None when there is no such delivery."""
    row = con.execute("SELECT agent, status, attempts FROM deliveries WHERE delivery_id = ?",
                      [delivery_id]).fetchone()
    return None if row is None else DeliveryState(agent=row[0], status=row[1], attempts=row[2])


def replay_delivery(con: duckdb.DuckDBPyConnection, delivery_id: str, *, now: float) -> None:
    """Make a delivery pending again, due at ``now``, its round of attempts starting anew."""
    con.execute("UPDATE deliveries SET status = 'pending', next_attempt_at = ?, round_start = attempts "
                "WHERE delivery_id = ?", [now, delivery_id])


def make_due(con: duckdb.DuckDBPyConnection, delivery_id: str, *, now: float) -> None:
    """Move a pending delivery's next attempt to ``now``."""
    con.execute("UPDATE deliveries SET next_attempt_at = ? WHERE delivery_id = ? AND status = 'pending'",
                [now, delivery_id])


def delivery_counts(con: duckdb.DuckDBPyConnection) -> list[DeliveryCount]:
    """How many deliveries there are per agent, event type and status, in that order."""
    return [DeliveryCount(agent=agent, event_type=event_type, status=status, count=n)
            for agent, event_type, status, n in con.execute(
                "SELECT agent, event_type, status, count(*) FROM deliveries GROUP BY ALL ORDER BY ALL").fetchall()]


# -- the event stream ---------------------------------------------------------------------------


def seq_of_delivery(con: duckdb.DuckDBPyConnection, delivery_id: str, agent: str) -> int | None:
    """The ``seq`` of the agent's delivery ``delivery_id``, or None when the agent has none by that id."""
    row = con.execute("SELECT seq FROM deliveries WHERE delivery_id = ? AND agent = ?",
                      [delivery_id, agent]).fetchone()
    return int(row[0]) if row else None


def visible_after(con: duckdb.DuckDBPyConnection, agent: str, after: int, *, hidden: Sequence[str],
                  limit: int) -> list[StreamRow]:
    """The agent's jobs with ``seq > after`` and a status not in ``hidden``, in ``seq`` order, at most ``limit``."""
    rows = con.execute(
        "SELECT seq, delivery_id, event_type, created_at, payload FROM deliveries "
        "WHERE agent = ? AND seq > ? AND NOT list_contains(?::VARCHAR[], status) ORDER BY seq LIMIT ?",
        [agent, after, list(hidden), limit]).fetchall()
    return [StreamRow(seq=seq, delivery_id=did, event_type=et, created_at=at, payload=payload)
            for seq, did, et, at, payload in rows]


class EmailEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event raised about a message: its type and its JSON payload."""

    event_type: str
    payload: str


def send_outcomes_of(con: duckdb.DuckDBPyConnection, email_id: str) -> list[EmailEvent]:
    """The ``message.sent`` and ``message.bounced`` events of ``email_id``, oldest first (then by delivery id)."""
    return [EmailEvent(event_type=event_type, payload=payload) for event_type, payload in con.execute(
        "SELECT event_type, payload FROM deliveries WHERE email_id = ? AND event_type IN "
        "('message.sent', 'message.bounced') ORDER BY created_at, delivery_id", [email_id]).fetchall()]


def deliveries_of_decision(con: duckdb.DuckDBPyConnection, decision_id: str) -> list[DeliveryRecord]:
    """The deliveries a decision made (its message.received and any later events), oldest first."""
    rows = con.execute(f"SELECT {_SUMMARY} FROM deliveries WHERE decision_id = ? ORDER BY seq",
                       [decision_id]).fetchall()
    return [DeliveryRecord(**dict(zip(_RECORD, row, strict=True))) for row in rows]
