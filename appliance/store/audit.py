"""The audit tables: decisions (one hash-chained row per gate decision and per send), each agent's chain head,
retention checkpoints, and events (everything that is not a decision)."""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "AuditFilter",
    "ChainHead",
    "ChainRow",
    "Checkpoint",
    "CheckpointMark",
    "DecisionCount",
    "DecisionPage",
    "DecisionQuery",
    "DecisionRow",
    "DecisionView",
    "EventRow",
    "HourCount",
    "SeqAccount",
    "Tally",
    "ThreadAdmission",
    "chain_agents",
    "chain_heads",
    "chain_rows",
    "checkpoint_times",
    "decision_counts",
    "decision_reason",
    "decision_reasons",
    "decision_row",
    "decision_views",
    "decisions_page",
    "decisions_per_hour",
    "delete_chain_prefix",
    "delete_heads",
    "event_count",
    "events_of",
    "export_parquet",
    "find_decisions",
    "first_seq_through",
    "head_hashes",
    "insert_checkpoint",
    "insert_decision",
    "insert_event",
    "insert_head",
    "last_admission",
    "last_seq_before",
    "latest_checkpoint",
    "present_decisions",
    "row_hash_at",
    "seq_account",
    "top_refusals",
    "top_senders",
    "top_seq",
    "update_heads",
]

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("decisions", "chain_head", "audit_checkpoints", "events"),
    ddl=(
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
        # audit: the newest row"s sequence number and hash, updated with every row
        """CREATE TABLE IF NOT EXISTS chain_head (
        agent VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        hash VARCHAR NOT NULL
    )""",
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
        # audit: columns added after the first release; row_hash leaves them out while they are NULL
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS detail VARCHAR",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS token_id VARCHAR",
    ),
)


class ChainHead(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's chain head: its newest row's seq and hash."""

    agent: str
    seq: int
    hash: str


class ChainRow(msgspec.Struct, frozen=True, kw_only=True):
    """A decision row as the chain hashes it: the values in the caller's column order, and its two hashes."""

    seq: int
    values: tuple[Any, ...]
    prev_hash: str
    row_hash: str


class CheckpointMark(msgspec.Struct, frozen=True, kw_only=True):
    """Where an agent's chain continues after retention: the last removed seq and its hash."""

    through_seq: int
    last_hash: str


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A retention checkpoint, as written: the removed prefix of one agent's chain."""

    agent: str
    ts: datetime
    through_seq: int
    last_hash: str
    rows_removed: int
    before_day: date


class SeqAccount(msgspec.Struct, frozen=True, kw_only=True):
    """Rows kept, rows retention removed, and the newest seq handed out (None before any)."""

    kept: int
    removed: int
    top: int | None


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of ``GET /api/v1/audit``; pagination by ``after`` (the last seq seen)."""

    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    sender: str | None = None
    agent: str | None = None
    after: int = 0
    limit: int = 100


class DecisionPage(msgspec.Struct, frozen=True, kw_only=True):
    """Decision rows as stored (every column but ``prev_hash``), with their column names."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


class DecisionCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many decisions an agent has with one action and reason (``""`` for none)."""

    agent: str
    action: str
    reason: str
    count: int


class ThreadAdmission(msgspec.Struct, frozen=True, kw_only=True):
    """The newest decision that let a thread's mail in (accept or quarantine): the sender rule that matched."""

    rule: int | None


# the writer's batch: decision rows and chain heads


def insert_decision(batch: Batch, columns: tuple[str, ...], row: Sequence[object]) -> None:
    """Queue one decision row in the writer's batch (``columns`` names ``row``'s values)."""
    batch.insert("decisions", columns, row)


def head_hashes(batch: Batch) -> dict[str, str]:
    """Every chain head's hash, by agent."""
    return dict(batch.execute("SELECT agent, hash FROM chain_head").fetchall())


def top_seq(batch: Batch) -> int | None:
    """The newest seq handed out (rows, retention checkpoints and heads alike), None before any."""
    top = batch.execute("SELECT max(seq) FROM (SELECT seq FROM decisions UNION ALL SELECT through_seq FROM "
                        "audit_checkpoints UNION ALL SELECT seq FROM chain_head)").fetchone()
    return int(top[0]) if top and top[0] is not None else None


def update_heads(batch: Batch, heads: Sequence[ChainHead]) -> int:
    """Move existing head rows in place, all in one statement; return how many rows were updated."""
    if len(heads) == 1:
        head = heads[0]
        found = batch.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE agent = ?",
                              [head.seq, head.hash, head.agent]).fetchone()
    else:
        found = batch.execute(
            "UPDATE chain_head SET seq = v.seq, hash = v.hash FROM (VALUES "
            + ", ".join("(?, ?, ?)" for _ in heads)
            + ") AS v(agent, seq, hash) WHERE chain_head.agent = v.agent",
            [value for head in heads for value in (head.agent, head.seq, head.hash)]).fetchone()
    return int(found[0]) if found is not None else 0


def delete_heads(batch: Batch, agents: Sequence[str]) -> None:
    """Remove the head rows of ``agents``."""
    batch.execute(f"DELETE FROM chain_head WHERE agent IN ({', '.join('?' for _ in agents)})", list(agents))


def insert_head(batch: Batch, head: ChainHead) -> None:
    """Queue a new head row in the writer's batch."""
    batch.insert("chain_head", ("agent", "seq", "hash"), (head.agent, head.seq, head.hash))


def insert_event(con: duckdb.DuckDBPyConnection, ts: datetime, type_: str, agent: str | None, detail: str) -> None:
    """Append a non-decision event."""
    con.execute("INSERT INTO events (ts, type, agent, detail) VALUES (?, ?, ?, ?)", [ts, type_, agent, detail])


# reading the chains back (verification)


def chain_agents(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every agent with decision rows, a chain head or a retention checkpoint, in order."""
    return [str(r[0]) for r in con.execute(
        "SELECT agent FROM decisions UNION SELECT agent FROM chain_head "
        "UNION SELECT agent FROM audit_checkpoints ORDER BY agent").fetchall()]


def latest_checkpoint(con: duckdb.DuckDBPyConnection, agent: str) -> CheckpointMark | None:
    """The agent's newest retention checkpoint, None when retention never removed any of its rows."""
    cp = con.execute("SELECT through_seq, last_hash FROM audit_checkpoints WHERE agent = ? "
                     "ORDER BY through_seq DESC LIMIT 1", [agent]).fetchone()
    return CheckpointMark(through_seq=int(cp[0]), last_hash=str(cp[1])) if cp else None


def first_seq_through(con: duckdb.DuckDBPyConnection, agent: str, through: int) -> int | None:
    """The agent's lowest seq at or before ``through``, None when it has no such row."""
    stale = con.execute("SELECT min(seq) FROM decisions WHERE agent = ? AND seq <= ?", [agent, through]).fetchone()
    return int(stale[0]) if stale is not None and stale[0] is not None else None


def chain_rows(con: duckdb.DuckDBPyConnection, agent: str, after: int, columns: Sequence[str]) -> Iterator[ChainRow]:
    """The agent's rows after seq ``after``, in seq order, ``values`` in ``columns`` order.

    Read in blocks from one open result: run nothing else on ``con`` until the rows are read.
    """
    select = (f"SELECT seq, {', '.join(columns)}, prev_hash, row_hash FROM decisions "
              "WHERE agent = ? AND seq > ? ORDER BY seq")
    cur = con.execute(select, [agent, after])
    while batch := cur.fetchmany(2048):
        for row in batch:
            yield ChainRow(seq=int(row[0]), values=tuple(row[1:-2]), prev_hash=row[-2], row_hash=row[-1])


def chain_heads(con: duckdb.DuckDBPyConnection, agent: str) -> list[ChainHead]:
    """The agent's head rows (one, unless someone wrote more)."""
    return [ChainHead(agent=agent, seq=int(seq), hash=str(hash_)) for seq, hash_ in
            con.execute("SELECT seq, hash FROM chain_head WHERE agent = ?", [agent]).fetchall()]


def seq_account(con: duckdb.DuckDBPyConnection) -> SeqAccount:
    """Rows kept, rows removed by retention, and the newest seq any table holds."""
    row = con.execute(
        "SELECT (SELECT count(*) FROM decisions), (SELECT coalesce(sum(rows_removed), 0) FROM audit_checkpoints), "
        "(SELECT max(s) FROM (SELECT max(seq) AS s FROM decisions UNION ALL SELECT max(through_seq) "
        "FROM audit_checkpoints UNION ALL SELECT max(seq) FROM chain_head))").fetchone()
    assert row is not None
    return SeqAccount(kept=int(row[0]), removed=int(row[1]), top=int(row[2]) if row[2] is not None else None)


def checkpoint_times(con: duckdb.DuckDBPyConnection) -> dict[str, datetime]:
    """Each agent's last retention run (its newest checkpoint's time), for agents retention ever ran for."""
    return dict(con.execute("SELECT agent, max(ts) FROM audit_checkpoints GROUP BY agent").fetchall())


def present_decisions(con: duckdb.DuckDBPyConnection, decision_ids: Sequence[str]) -> set[str]:
    """Which of ``decision_ids`` have a decision row."""
    return {str(r[0]) for r in con.execute(
        "SELECT decision_id FROM decisions WHERE decision_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(decision_ids)]).fetchall()}


# retention


def last_seq_before(con: duckdb.DuckDBPyConnection, agent: str, cutoff: datetime) -> int | None:
    """The agent's newest seq with a timestamp before ``cutoff``, None when it has none."""
    last = con.execute("SELECT max(seq) FROM decisions WHERE agent = ? AND ts < ?", [agent, cutoff]).fetchone()
    return int(last[0]) if last is not None and last[0] is not None else None


def row_hash_at(con: duckdb.DuckDBPyConnection, seq: int) -> str | None:
    """The stored hash of row ``seq``, None when there is no such row."""
    hashed = con.execute("SELECT row_hash FROM decisions WHERE seq = ?", [seq]).fetchone()
    return str(hashed[0]) if hashed is not None else None


def delete_chain_prefix(con: duckdb.DuckDBPyConnection, agent: str, through: int) -> int:
    """Delete the agent's rows up to seq ``through``; return how many there were."""
    counted = con.execute("SELECT count(*) FROM decisions WHERE agent = ? AND seq <= ?", [agent, through]).fetchone()
    removed = int(counted[0]) if counted else 0
    con.execute("DELETE FROM decisions WHERE agent = ? AND seq <= ?", [agent, through])
    return removed


def insert_checkpoint(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint) -> None:
    """Record what retention removed."""
    con.execute("INSERT INTO audit_checkpoints (agent, ts, through_seq, last_hash, rows_removed, before_day) "
                "VALUES (?, ?, ?, ?, ?, ?)", [checkpoint.agent, checkpoint.ts, checkpoint.through_seq,
                                              checkpoint.last_hash, checkpoint.rows_removed, checkpoint.before_day])


# the audit API and the operator's other reads


def decisions_page(con: duckdb.DuckDBPyConnection, flt: AuditFilter) -> DecisionPage:
    """Decision rows matching ``flt`` in seq order, at most ``limit`` (1 to 1000) after ``after``."""
    where: list[str] = ["seq > ?"]
    args: list[object] = [flt.after]
    for column, op, value in (("ts", ">=", flt.since), ("ts", "<", flt.until), ("action", "=", flt.action),
                              ("lower(header_from)", "=", flt.sender.lower() if flt.sender else None),
                              ("agent", "=", flt.agent.lower() if flt.agent else None)):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    cur = con.execute(f"SELECT * EXCLUDE (prev_hash, row_hash), row_hash FROM decisions "
                      f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", [*args, min(max(flt.limit, 1), 1000)])
    columns = [d[0] for d in cur.description or []]
    return DecisionPage(columns=columns, rows=[tuple(row) for row in cur.fetchall()])


def export_parquet(con: duckdb.DuckDBPyConnection, out: Path) -> int:
    """Write every decision row, in seq order, to the Parquet file ``out``; return the row count.

    ``out`` is written as given (replaced if it exists): callers pass a path of their own
    (``appliance.audit.query.writing_to``, or a private temporary directory).
    """
    path = str(out).replace("'", "''")
    counted = con.execute(f"COPY (SELECT * FROM decisions ORDER BY seq) TO '{path}' (FORMAT parquet)").fetchone()
    return int(counted[0]) if counted else 0


def decision_counts(con: duckdb.DuckDBPyConnection) -> list[DecisionCount]:
    """Decisions counted by agent, action and reason, in that order (for ``GET /metrics``)."""
    return [DecisionCount(agent=agent, action=action, reason=reason, count=int(n)) for agent, action, reason, n in
            con.execute("SELECT agent, action, coalesce(reason, ''), count(*) FROM decisions "
                        "GROUP BY ALL ORDER BY ALL").fetchall()]


def last_admission(con: duckdb.DuckDBPyConnection, agent: str, thread_id: str) -> ThreadAdmission | None:
    """The agent's newest decision that accepted or quarantined mail of ``thread_id``, None when none did."""
    row = con.execute(
        "SELECT rule FROM decisions WHERE agent = ? AND thread_id = ? AND action IN ('accept', 'quarantine') "
        "ORDER BY seq DESC LIMIT 1", [agent, thread_id]).fetchone()
    return ThreadAdmission(rule=row[0]) if row is not None else None


def decision_reason(con: duckdb.DuckDBPyConnection, decision_id: str) -> str | None:
    """A decision's reason, None when it has none or there is no such decision."""
    row = con.execute("SELECT reason FROM decisions WHERE decision_id = ?", [decision_id]).fetchone()
    return row[0] if row else None


def event_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many events the audit log holds."""
    row = con.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


class DecisionView(msgspec.Struct, frozen=True, kw_only=True):
    """What JMAP shows of a gate decision (the ``gate`` property of an Email)."""

    decision_id: str
    action: str
    reason: str | None
    rule: int | None
    capabilities: list[str] | None
    spf: str | None
    dkim: str | None
    dmarc: str | None
    ts: datetime
    thread_id: str | None
    intake: str | None


def decision_views(con: duckdb.DuckDBPyConnection, agent: str, decision_ids: list[str]) -> list[DecisionView]:
    """The agent's decisions among ``decision_ids``."""
    found = con.execute("SELECT decision_id, action, reason, rule, capabilities, spf, dkim, dmarc, ts, thread_id, "
                        "intake FROM decisions WHERE decision_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?",
                        [decision_ids, agent]).fetchall()
    return [DecisionView(decision_id=r[0], action=r[1], reason=r[2], rule=r[3], capabilities=r[4], spf=r[5],
                         dkim=r[6], dmarc=r[7], ts=r[8], thread_id=r[9], intake=r[10]) for r in found]


# the dashboard's reads (appliance.dashboard)


class HourCount(msgspec.Struct, frozen=True, kw_only=True):
    """Decisions with one action in one hour (``hour``: the hour's start, naive UTC)."""

    hour: datetime
    action: str
    count: int


class Tally(msgspec.Struct, frozen=True, kw_only=True):
    """How many decisions share one value (a sender, a reason)."""

    value: str
    count: int


def decisions_per_hour(con: duckdb.DuckDBPyConnection, since: datetime) -> list[HourCount]:
    """Inbound decisions since ``since`` counted by hour and action, in time order (sends are not counted)."""
    return [HourCount(hour=hour, action=action, count=int(n)) for hour, action, n in con.execute(
        "SELECT date_trunc('hour', ts) AS hour, action, count(*) FROM decisions WHERE ts >= ? "
        "AND intake <> 'outbound' GROUP BY ALL ORDER BY ALL", [since]).fetchall()]


def top_senders(con: duckdb.DuckDBPyConnection, since: datetime, limit: int = 10) -> list[Tally]:
    """The From addresses with the most inbound decisions since ``since``, most first."""
    return [Tally(value=str(v), count=int(n)) for v, n in con.execute(
        "SELECT lower(header_from), count(*) AS n FROM decisions WHERE ts >= ? AND intake <> 'outbound' "
        "AND header_from IS NOT NULL GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?", [since, limit]).fetchall()]


def top_refusals(con: duckdb.DuckDBPyConnection, since: datetime, limit: int = 10) -> list[Tally]:
    """The reasons of decisions that did not accept, since ``since``, most first."""
    return [Tally(value=str(v), count=int(n)) for v, n in con.execute(
        "SELECT coalesce(reason, action), count(*) AS n FROM decisions WHERE ts >= ? AND action <> 'accept' "
        "GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?", [since, limit]).fetchall()]


class DecisionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A decision row as the dashboard shows it: every column but ``prev_hash``."""

    seq: int
    decision_id: str
    ts: datetime
    agent: str
    client_ip: str | None
    helo: str | None
    mail_from: str | None
    rcpt_to: list[str] | None
    header_from: str | None
    message_id: str | None
    subject: str | None
    thread_id: str | None
    spf: str | None
    dkim: str | None
    dmarc: str | None
    rule: int | None
    action: str
    reason: str | None
    capabilities: list[str] | None
    estimated_tokens: int | None
    size: int | None
    body_sha256: str | None
    latency_ms: float | None
    intake: str | None
    detail: str | None
    token_id: str | None
    row_hash: str


class DecisionQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The dashboard's decision filters; pages go back in time by ``before`` (the last seq shown)."""

    agent: str | None = None
    sender: str | None = None
    """An address (exact, case-insensitive) or a domain (``example.org``: it and its subdomains)."""
    action: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    """Words the subject contains (case-insensitive)."""
    before: int | None = None
    limit: int = 50


_ROW_COLUMNS = ", ".join(DecisionRow.__struct_fields__)


def _escaped(text: str) -> str:
    """``text`` matched literally by LIKE ... ESCAPE '\\'."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find_decisions(con: duckdb.DuckDBPyConnection, query: DecisionQuery) -> list[DecisionRow]:
    """Decisions matching ``query``, newest first, at most ``limit`` (1 to 500)."""
    where: list[str] = []
    args: list[object] = []
    if query.sender:
        sender = query.sender.strip().lower()
        if "@" in sender:
            where.append("lower(header_from) = ?")
            args.append(sender)
        else:
            where.append("(lower(header_from) LIKE ? ESCAPE '\\' OR lower(header_from) LIKE ? ESCAPE '\\')")
            args.extend([f"%@{_escaped(sender)}", f"%.{_escaped(sender)}"])
    for column, value in (("agent", query.agent.lower() if query.agent else None), ("action", query.action),
                          ("reason", query.reason)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if query.since is not None:
        where.append("ts >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("ts < ?")
        args.append(query.until)
    if query.text:
        where.append("subject ILIKE ? ESCAPE '\\'")
        args.append(f"%{_escaped(query.text.strip())}%")
    if query.before is not None:
        where.append("seq < ?")
        args.append(query.before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = con.execute(f"SELECT {_ROW_COLUMNS} FROM decisions {clause} ORDER BY seq DESC LIMIT ?",
                       [*args, min(max(query.limit, 1), 500)]).fetchall()
    return [DecisionRow(**dict(zip(DecisionRow.__struct_fields__, row, strict=True))) for row in rows]


def decision_row(con: duckdb.DuckDBPyConnection, decision_id: str) -> DecisionRow | None:
    """One decision, or None when there is no such decision."""
    row = con.execute(f"SELECT {_ROW_COLUMNS} FROM decisions WHERE decision_id = ?", [decision_id]).fetchone()
    return None if row is None else DecisionRow(**dict(zip(DecisionRow.__struct_fields__, row, strict=True)))


def decision_reasons(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every reason the decisions hold, in order (for the filter's choices)."""
    return [str(r[0]) for r in con.execute(
        "SELECT DISTINCT reason FROM decisions WHERE reason IS NOT NULL ORDER BY 1").fetchall()]


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One audit event (not a decision): when, what, for which agent, and its detail."""

    ts: datetime
    type: str
    agent: str | None
    detail: str


def events_of(con: duckdb.DuckDBPyConnection, types: Sequence[str], *, agent: str | None = None,
              limit: int = 100) -> list[EventRow]:
    """The newest events of the given types (of ``agent`` when given), newest first."""
    where = "type IN (SELECT unnest(?::VARCHAR[]))"
    args: list[object] = [list(types)]
    if agent is not None:
        where += " AND agent = ?"
        args.append(agent)
    return [EventRow(ts=ts, type=str(kind), agent=who, detail=str(detail or "")) for ts, kind, who, detail in
            con.execute(f"SELECT ts, type, agent, detail FROM events WHERE {where} ORDER BY ts DESC LIMIT ?",
                        [*args, max(1, min(limit, 1000))]).fetchall()]
