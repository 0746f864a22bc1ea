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

from appliance.store import audit as audit_rows
from appliance.store import evidence, messages
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
        self.hashes = audit_rows.head_hashes(batch)
        self.stored = set(self.hashes)
        """Agents whose head row exists (updated in place; a new chain's head is inserted)."""
        top = audit_rows.top_seq(batch)
        self.next_seq = top + 1 if top is not None else 1
        self.moved: dict[str, int] = {}

    def save(self, batch: Batch) -> None:
        """Write the heads that moved in this batch (once per agent, not once per row).

        A head row is updated in place, all of them in one statement. If fewer rows than
        expected were updated (a head row removed behind the writer's back), those heads are
        written anew, as they were before updates in place: one row per agent, at its newest seq.
        """
        moved, self.moved = self.moved, {}
        known = [audit_rows.ChainHead(agent=agent, seq=seq, hash=self.hashes[agent])
                 for agent, seq in moved.items() if agent in self.stored]
        if known and audit_rows.update_heads(batch, known) != len(known):
            agents = [head.agent for head in known]
            audit_rows.delete_heads(batch, agents)
            self.stored.difference_update(agents)
        for agent, seq in moved.items():
            if agent not in self.stored:
                audit_rows.insert_head(batch, audit_rows.ChainHead(agent=agent, seq=seq, hash=self.hashes[agent]))
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
    audit_rows.insert_decision(batch, _ROW, (seq, *values, prev, digest))
    heads.hashes[record.agent] = digest
    heads.moved[record.agent] = seq
    batch.before_commit(_MEMO, heads.save)
    return seq


def record_event(con: duckdb.DuckDBPyConnection, type_: str, agent: str | None, detail: str) -> None:
    """Append a non-decision event (policy reload, endpoint disabled...)."""
    audit_rows.insert_event(con, utc(), type_, agent, detail)


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
    agents = audit_rows.chain_agents(con)
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
    cp = audit_rows.latest_checkpoint(con, agent)
    through, prev = (cp.through_seq, cp.last_hash) if cp else (0, GENESIS)
    if cp is not None:
        stale = audit_rows.first_seq_through(con, agent, through)
        if stale is not None:
            raise _Broken(agent, f"row {stale} ({agent}): a row at or before the retention checkpoint "
                                 f"(through seq {through}), which removed them all", seq=stale)
    last_seq = through
    for row in audit_rows.chain_rows(con, agent, through, _COLUMNS):
        walked[0] += 1
        seq, values = row.seq, row.values
        decision_id = str(values[0])
        if row.prev_hash != prev:
            before = ("the chain's start (genesis, or its retention checkpoint)" if last_seq == through
                      else f"row {last_seq}, the one before it")
            raise _Broken(agent, f"row {seq} ({agent}): prev_hash does not match {before}: "
                                 "a row was removed, inserted or moved", seq, decision_id)
        if row_hash(prev, values) != row.row_hash:
            raise _Broken(agent, f"row {seq} ({agent}): contents do not match its row_hash", seq, decision_id)
        prev, last_seq = row.row_hash, seq
    heads = audit_rows.chain_heads(con, agent)
    if not heads:
        raise _Broken(agent, f"{agent}: the chain head is missing (rows through seq {last_seq})", last_seq or None)
    if len(heads) > 1:
        raise _Broken(agent, f"{agent}: {len(heads)} chain heads, one expected", heads[0].seq)
    head_seq, head_hash = heads[0].seq, heads[0].hash
    if head_hash != prev or head_seq != last_seq:
        if last_seq == through:
            raise _Broken(agent, f"{agent}: every row after seq {through} is missing "
                                 f"(the chain head is at seq {head_seq})", head_seq)
        raise _Broken(agent, f"{agent}: rows after seq {last_seq} are missing, or the chain was reordered "
                             f"(the chain head is at seq {head_seq})", head_seq)


def _verify_count(con: duckdb.DuckDBPyConnection) -> None:
    """Sequence numbers are handed out without gaps, so rows kept plus rows retention removed
    must account for every seq up to the newest; whole chains deleted with their heads show here."""
    account = audit_rows.seq_account(con)
    kept, removed, top = account.kept, account.removed, account.top or 0
    if kept + removed != top:
        missing = top - kept - removed
        detail = (f"{missing} decision row(s) up to seq {top} are missing, chain and head alike" if missing > 0
                  else f"{-missing} decision row(s) more than seq {top} accounts for")
        raise _Broken(None, detail)


def _verify_stored_messages(con: duckdb.DuckDBPyConnection) -> None:
    """Every message in the store was let in by a decision. One stored after the agent's last
    retention run (which can only have removed decisions older than itself) whose decision is
    missing was removed from the chain, even when the rows after it and the head were rewritten."""
    # Two owners, two questions: the messages stored since each agent's last retention run, a page at a
    # time, oldest first; then which of their decisions exist. The first message without one is named.
    since = audit_rows.checkpoint_times(con)
    page = messages.admitted_after(con, since)
    while page:
        present = audit_rows.present_decisions(con, [m.decision_id for m in page])
        for message in page:
            if message.decision_id not in present:
                raise _Broken(message.agent, f"{message.agent}: message {message.email_id} was stored by decision "
                                             f"{message.decision_id}, which is missing from the chain",
                              decision_id=message.decision_id)
        page = messages.admitted_after(con, since, after=page[-1])


def apply_retention(con: duckdb.DuckDBPyConnection, agent: str, retention_days: int, now: datetime, *,
                    refused_raw_days: int | None = None) -> int:
    """Remove the agent's rows from days older than ``retention_days``; return how many.

    ``now`` is naive UTC.

    Whole UTC days go; the removed prefix of the chain is replaced by a checkpoint. The decisions'
    evidence (``appliance.store.evidence``) goes with them, and with ``refused_raw_days`` the bytes of
    refused messages older than that many days (0: all of them).
    """
    cutoff_day = (now - timedelta(days=retention_days)).date()
    cutoff = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day)
    if refused_raw_days is not None:
        evidence.delete_refused_raw_before(con, agent, now - timedelta(days=refused_raw_days))
    evidence.delete_evidence_before(con, agent, cutoff)
    through = audit_rows.last_seq_before(con, agent, cutoff)
    if through is None:
        return 0
    hashed = audit_rows.row_hash_at(con, through)
    assert hashed is not None
    removed = audit_rows.delete_chain_prefix(con, agent, through)
    audit_rows.insert_checkpoint(con, audit_rows.Checkpoint(agent=agent, ts=now, through_seq=through,
                                                            last_hash=hashed, rows_removed=removed,
                                                            before_day=cutoff_day))
    return removed
