"""Decision rows and their hash chain.

Each agent has its own chain: a row's ``row_hash`` is SHA-256 over the
previous row's hash and the row's values, so editing, inserting or deleting a
row breaks every hash after it. ``chain_head`` holds each chain's newest seq
and hash (so removing the last rows shows), and seq numbers are handed out
without gaps across chains (so removing a whole chain, head included, shows).
Retention removes a prefix of a chain (whole days) and leaves a checkpoint
holding the last removed hash and how many rows went, from which
``verify_chain`` continues.
"""

from __future__ import annotations

__all__ = ["GENESIS", "DecisionRecord", "VerifyReport", "append_decision", "apply_retention",
           "record_event", "row_hash", "verify_chain"]

import hashlib
from datetime import datetime, timedelta

import duckdb
import msgspec

from appliance.store.database import Batch, utc

GENESIS = "0" * 64
"""The previous hash of an agent's first row."""


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row, as written (``seq`` and the hashes are added on append).

    Field order is the hashing order: append fields at the end only.
    """

    decision_id: str
    ts: datetime
    """Naive UTC, as every timestamp in the database."""
    agent: str
    client_ip: str
    helo: str
    mail_from: str
    rcpt_to: list[str]
    header_from: str | None
    message_id: str | None
    subject: str | None
    thread_id: str
    spf: str
    dkim: str
    dmarc: str
    rule: int | None
    action: str
    reason: str | None
    capabilities: list[str]
    estimated_tokens: int
    size: int
    body_sha256: str | None
    latency_ms: float
    intake: str
    """``smtp``, ``hook``, ``local`` (agent to agent) or ``outbound`` (a send)."""
    detail: str | None = None
    """What the deciding step found, for refusals (why a message is malformed, which recipient...)."""
    token_id: str | None = None
    """The capability token a send or tool call presented (its ``jti``)."""


_COLUMNS = tuple(DecisionRecord.__struct_fields__)
_FIRST_RELEASE = 23
"""Columns of the first release. Later ones are hashed only when not NULL, so rows written
before they existed verify unchanged."""
_ROW = ("seq", *_COLUMNS, "prev_hash", "row_hash")
_MEMO = "audit.chain"


def row_hash(prev_hash: str, values: tuple[object, ...]) -> str:
    """SHA-256 (hex) of the previous hash and a row's values in column order."""
    later = list(values[_FIRST_RELEASE:])
    while later and later[-1] is None:
        later.pop()
    canonical = [v.isoformat() if isinstance(v, datetime) else v for v in (*values[:_FIRST_RELEASE], *later)]
    return hashlib.sha256(prev_hash.encode() + b"\n" + msgspec.json.encode(canonical)).hexdigest()


class _Heads:
    """The writer's view of every chain's head (kept across batches, dropped on rollback)."""

    def __init__(self, batch: Batch) -> None:
        self.hashes = dict(batch.execute("SELECT agent, hash FROM chain_head").fetchall())
        self.stored = set(self.hashes)
        """Agents whose head row exists (updated in place; a new chain's head is inserted)."""
        top = batch.execute("SELECT max(seq) FROM (SELECT seq FROM decisions UNION ALL SELECT through_seq FROM "
                            "audit_checkpoints UNION ALL SELECT seq FROM chain_head)").fetchone()
        self.next_seq = int(top[0]) + 1 if top and top[0] is not None else 1
        self.moved: dict[str, int] = {}

    def save(self, batch: Batch) -> None:
        """Write the heads that moved in this batch (once per agent, not once per row).

        A head row is updated in place, all of them in one statement. If fewer rows than
        expected were updated (a head row removed behind the writer's back), those heads are
        written anew, as they were before updates in place: one row per agent, at its newest seq.
        """
        moved, self.moved = self.moved, {}
        known = [(agent, seq, self.hashes[agent]) for agent, seq in moved.items() if agent in self.stored]
        if known:
            if len(known) == 1:
                found = batch.execute("UPDATE chain_head SET seq = ?, hash = ? WHERE agent = ?",
                                      [known[0][1], known[0][2], known[0][0]]).fetchone()
            else:
                found = batch.execute(
                    "UPDATE chain_head SET seq = v.seq, hash = v.hash FROM (VALUES "
                    + ", ".join("(?, ?, ?)" for _ in known)
                    + ") AS v(agent, seq, hash) WHERE chain_head.agent = v.agent",
                    [value for head in known for value in head]).fetchone()
            if found is None or int(found[0]) != len(known):
                batch.execute(f"DELETE FROM chain_head WHERE agent IN ({', '.join('?' for _ in known)})",
                              [agent for agent, _, _ in known])
                self.stored.difference_update(agent for agent, _, _ in known)
        for agent, seq in moved.items():
            if agent not in self.stored:
                batch.insert("chain_head", ("agent", "seq", "hash"), (agent, seq, self.hashes[agent]))
                self.stored.add(agent)


def append_decision(batch: Batch, record: DecisionRecord) -> int:
    """Append ``record`` to its agent's chain in the writer's open batch; return its seq."""
    heads: _Heads | None = batch.memo.get(_MEMO)
    if heads is None:
        heads = batch.memo[_MEMO] = _Heads(batch)
    prev = heads.hashes.get(record.agent, GENESIS)
    values = tuple(getattr(record, c) for c in _COLUMNS)
    digest = row_hash(prev, values)
    seq = heads.next_seq
    heads.next_seq += 1
    batch.insert("decisions", _ROW, (seq, *values, prev, digest))
    heads.hashes[record.agent] = digest
    heads.moved[record.agent] = seq
    batch.before_commit(_MEMO, heads.save)
    return seq


def record_event(con: duckdb.DuckDBPyConnection, type_: str, agent: str | None, detail: str) -> None:
    """Append a non-decision event (policy reload, endpoint disabled...)."""
    con.execute("INSERT INTO events (ts, type, agent, detail) VALUES (?, ?, ?, ?)",
                [utc(), type_, agent, detail])


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What walking the chains found."""

    ok: bool
    rows: int
    agents: int
    """Chains walked: every agent with rows, a chain head or a retention checkpoint."""
    broken_seq: int | None = None
    broken_decision_id: str | None = None
    detail: str = ""
    broken_agent: str | None = None


def verify_chain(con: duckdb.DuckDBPyConnection) -> VerifyReport:
    """Walk every chain the appliance ever started; name the first row (or chain) that does not verify.

    The walk reads one snapshot: rows the writer commits meanwhile (or retention removes)
    would otherwise read as a broken chain.
    """
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:  # the caller's transaction is already one snapshot
        return _verify_chain(con)
    try:
        return _verify_chain(con)
    finally:
        con.execute("ROLLBACK")


class _Broken(Exception):
    def __init__(self, agent: str | None, detail: str, seq: int | None = None,
                 decision_id: str | None = None) -> None:
        super().__init__(detail)
        self.agent, self.detail, self.seq, self.decision_id = agent, detail, seq, decision_id


def _verify_chain(con: duckdb.DuckDBPyConnection) -> VerifyReport:
    # A chain exists once its first row is appended (chain_head) and stays known after retention
    # (audit_checkpoints): listing agents from the rows alone would pass a chain whose rows all vanished.
    agents = [str(r[0]) for r in con.execute(
        "SELECT agent FROM decisions UNION SELECT agent FROM chain_head "
        "UNION SELECT agent FROM audit_checkpoints ORDER BY agent").fetchall()]
    walked = [0]
    try:
        for agent in agents:
            _verify_agent(con, agent, walked)
        _verify_count(con)
        _verify_stored_messages(con)
    except _Broken as broken:
        return VerifyReport(ok=False, rows=walked[0], agents=len(agents), broken_seq=broken.seq,
                            broken_decision_id=broken.decision_id, broken_agent=broken.agent,
                            detail=broken.detail)
    return VerifyReport(ok=True, rows=walked[0], agents=len(agents), detail="every chain verifies")


def _verify_agent(con: duckdb.DuckDBPyConnection, agent: str, walked: list[int]) -> None:
    cp = con.execute("SELECT through_seq, last_hash FROM audit_checkpoints WHERE agent = ? "
                     "ORDER BY through_seq DESC LIMIT 1", [agent]).fetchone()
    through, prev = (int(cp[0]), str(cp[1])) if cp else (0, GENESIS)
    if cp is not None:
        stale = con.execute("SELECT min(seq) FROM decisions WHERE agent = ? AND seq <= ?", [agent, through]).fetchone()
        if stale is not None and stale[0] is not None:
            raise _Broken(agent, f"row {stale[0]} ({agent}): a row at or before the retention checkpoint "
                                 f"(through seq {through}), which removed them all", seq=int(stale[0]))
    select = (f"SELECT seq, {', '.join(_COLUMNS)}, prev_hash, row_hash FROM decisions "
              "WHERE agent = ? AND seq > ? ORDER BY seq")
    last_seq = through
    cur = con.execute(select, [agent, through])
    while batch := cur.fetchmany(2048):
        for row in batch:
            walked[0] += 1
            seq, values, stored_prev, stored_hash = int(row[0]), tuple(row[1:-2]), row[-2], row[-1]
            decision_id = str(values[0])
            if stored_prev != prev:
                before = ("the chain's start (genesis, or its retention checkpoint)" if last_seq == through
                          else f"row {last_seq}, the one before it")
                raise _Broken(agent, f"row {seq} ({agent}): prev_hash does not match {before}: "
                                     "a row was removed, inserted or moved", seq, decision_id)
            if row_hash(prev, values) != stored_hash:
                raise _Broken(agent, f"row {seq} ({agent}): contents do not match its row_hash", seq, decision_id)
            prev, last_seq = stored_hash, seq
    heads = con.execute("SELECT seq, hash FROM chain_head WHERE agent = ?", [agent]).fetchall()
    if not heads:
        raise _Broken(agent, f"{agent}: the chain head is missing (rows through seq {last_seq})", last_seq or None)
    if len(heads) > 1:
        raise _Broken(agent, f"{agent}: {len(heads)} chain heads, one expected", int(heads[0][0]))
    head_seq, head_hash = int(heads[0][0]), str(heads[0][1])
    if head_hash != prev or head_seq != last_seq:
        if last_seq == through:
            raise _Broken(agent, f"{agent}: every row after seq {through} is missing "
                                 f"(the chain head is at seq {head_seq})", head_seq)
        raise _Broken(agent, f"{agent}: rows after seq {last_seq} are missing, or the chain was reordered "
                             f"(the chain head is at seq {head_seq})", head_seq)


def _verify_count(con: duckdb.DuckDBPyConnection) -> None:
    """Sequence numbers are handed out without gaps, so rows kept plus rows retention removed
    must account for every seq up to the newest; whole chains deleted with their heads show here."""
    row = con.execute(
        "SELECT (SELECT count(*) FROM decisions), (SELECT coalesce(sum(rows_removed), 0) FROM audit_checkpoints), "
        "(SELECT max(s) FROM (SELECT max(seq) AS s FROM decisions UNION ALL SELECT max(through_seq) "
        "FROM audit_checkpoints UNION ALL SELECT max(seq) FROM chain_head))").fetchone()
    assert row is not None
    kept, removed, top = int(row[0]), int(row[1]), int(row[2] or 0)
    if kept + removed != top:
        missing = top - kept - removed
        detail = (f"{missing} decision row(s) up to seq {top} are missing, chain and head alike" if missing > 0
                  else f"{-missing} decision row(s) more than seq {top} accounts for")
        raise _Broken(None, detail)


def _verify_stored_messages(con: duckdb.DuckDBPyConnection) -> None:
    """Every message in the store was let in by a decision. One stored after the agent's last
    retention run (which can only have removed decisions older than itself) whose decision is
    missing was removed from the chain, even when the rows after it and the head were rewritten."""
    # inbox and quarantine: appliance.store.messages's mailboxes of mail that passed the gate
    found = con.execute(
        "SELECT m.email_id, m.decision_id, m.agent FROM messages m WHERE m.mailbox IN ('inbox', 'quarantine') "
        "AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.decision_id = m.decision_id) "
        "AND m.received_at > coalesce((SELECT max(c.ts) FROM audit_checkpoints c WHERE c.agent = m.agent), "
        "TIMESTAMP '-infinity') ORDER BY m.received_at LIMIT 1").fetchall()
    if found:
        email_id, decision_id, agent = (str(v) for v in found[0])
        raise _Broken(agent, f"{agent}: message {email_id} was stored by decision {decision_id}, "
                             "which is missing from the chain", decision_id=decision_id)


def apply_retention(con: duckdb.DuckDBPyConnection, agent: str, retention_days: int, now: datetime) -> int:
    """Remove the agent's rows from days older than ``retention_days``; return how many.

    ``now`` is naive UTC.

    Whole UTC days go; the removed prefix of the chain is replaced by a checkpoint.
    """
    cutoff_day = (now - timedelta(days=retention_days)).date()
    cutoff = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day)
    last = con.execute("SELECT max(seq) FROM decisions WHERE agent = ? AND ts < ?", [agent, cutoff]).fetchone()
    if last is None or last[0] is None:
        return 0
    through = int(last[0])
    hashed = con.execute("SELECT row_hash FROM decisions WHERE seq = ?", [through]).fetchone()
    assert hashed is not None
    counted = con.execute("SELECT count(*) FROM decisions WHERE agent = ? AND seq <= ?", [agent, through]).fetchone()
    removed = int(counted[0]) if counted else 0
    con.execute("DELETE FROM decisions WHERE agent = ? AND seq <= ?", [agent, through])
    con.execute("INSERT INTO audit_checkpoints (agent, ts, through_seq, last_hash, rows_removed, before_day) "
                "VALUES (?, ?, ?, ?, ?, ?)", [agent, now, through, hashed[0], removed, cutoff_day])
    return removed
