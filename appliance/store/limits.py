"""Rate-limit and token-budget counters that survive restarts.

The gate reads an in-memory ``InMemoryLimits``; every charge is also written
to ``limit_events`` in the same transaction as its decision, and loaded back
at start-up (the last day of events, and lifetime totals per key).
"""

from __future__ import annotations

__all__ = ["SCHEMA", "PersistentLimits", "TokenSpend", "token_spend"]

import duckdb
import msgspec

from appliance.gate.decision import LimitCharge
from appliance.gate.limits import DAY, InMemoryLimits
from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("limit_events",),
    ddl=(
        # limits: counted events and token charges (appliance.limits)
        """CREATE TABLE IF NOT EXISTS limit_events (
        key VARCHAR NOT NULL,
        ts DOUBLE NOT NULL,
        tokens BIGINT NOT NULL
    )""",
    ),
)

_COLUMNS = ("key", "ts", "tokens")


class PersistentLimits(InMemoryLimits):
    """InMemoryLimits mirrored in the database."""

    @classmethod
    def load(cls, con: duckdb.DuckDBPyConnection, now: float) -> PersistentLimits:
        limits = cls()
        for key, total in con.execute(
                "SELECT key, sum(tokens) FROM limit_events WHERE tokens > 0 AND ts < ? GROUP BY key",
                [now - DAY]).fetchall():
            limits._totals[key] += int(total)
        for key, ts, tokens in con.execute(
                "SELECT key, ts, tokens FROM limit_events WHERE ts >= ? ORDER BY ts", [now - DAY]).fetchall():
            if tokens:
                InMemoryLimits.add_tokens(limits, key, int(tokens), float(ts))
            else:
                limits.add_event(key, float(ts))
        return limits

    @staticmethod
    def write_charge(batch: Batch, charge: LimitCharge, now: float) -> None:
        """Persist ``charge`` in the writer's open batch."""
        for key in charge.rate_keys:
            batch.insert("limit_events", _COLUMNS, (key, now, 0))
        for key in charge.token_keys:
            if charge.tokens:
                batch.insert("limit_events", _COLUMNS, (key, now, charge.tokens))

    @staticmethod
    def write_tokens(con: duckdb.DuckDBPyConnection, key: str, tokens: int, now: float) -> None:
        con.execute("INSERT INTO limit_events (key, ts, tokens) VALUES (?, ?, ?)", [key, now, tokens])

    @staticmethod
    def compact(con: duckdb.DuckDBPyConnection, now: float) -> int:
        """Fold events older than a day into one total row per key; return rows removed."""
        before = now - DAY
        counted = con.execute("SELECT count(*) FROM limit_events WHERE ts < ?", [before]).fetchone()
        old = int(counted[0]) if counted else 0
        if not old:
            return 0
        con.execute("CREATE TEMP TABLE folded AS SELECT key, min(ts) AS ts, sum(tokens) AS tokens "
                    "FROM limit_events WHERE ts < ? AND tokens > 0 GROUP BY key", [before])
        con.execute("DELETE FROM limit_events WHERE ts < ?", [before])
        con.execute("INSERT INTO limit_events SELECT key, ts, tokens FROM folded")
        con.execute("DROP TABLE folded")
        return old


class TokenSpend(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens charged to one key: a thread (``kind`` thread) or an agent's sender rule (``kind`` day)."""

    agent: str
    subject: str
    """The thread id, or the sender rule's key."""
    tokens: int


def token_spend(con: duckdb.DuckDBPyConnection, kind: str, *, since: float, limit: int = 20) -> list[TokenSpend]:
    """The keys of ``kind`` (``thread`` or ``day``, as ``appliance.gate.limits`` names them) with the most
    tokens charged since ``since`` (unix seconds; events folded by compaction count at their first time)."""
    rows = con.execute("SELECT key, sum(tokens) AS t FROM limit_events WHERE key LIKE ? AND ts >= ? AND tokens > 0 "
                       "GROUP BY key ORDER BY t DESC, key LIMIT ?", [f"{kind}|%", since, limit]).fetchall()
    spent = []
    for key, tokens in rows:
        _, agent, subject = str(key).split("|", 2)
        spent.append(TokenSpend(agent=agent, subject=subject, tokens=int(tokens)))
    return spent
