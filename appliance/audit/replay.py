"""Reading an agent's history for ``appliance.gate.replay``: decisions, their evidence, the bytes kept.

The adapter decides nothing: it pages through the agent's inbound decision
rows since a time (in seq order, the order the gate counted them), joins each
with its recorded facts (``appliance.store.evidence``) and its message bytes
(the store's copy without our trace fields, or a refused message's kept bytes),
and feeds them to a ``Replay``. Pages keep memory bounded however long the history.
"""

from __future__ import annotations

__all__ = ["history_replay", "replay_history"]

import functools
from collections.abc import Iterator
from datetime import datetime

import duckdb

from appliance.gate.replay import BytesState, RecordedDecision, Replay, ReplayReport
from appliance.mail import ReadingLimits
from appliance.policy import MailPolicy
from appliance.store import audit as audit_rows
from appliance.store import evidence as evidence_rows
from appliance.store import messages as stored_messages
from appliance.store.database import Database

PAGE = 200
"""Decisions read (and their bytes held) at once."""

_OUTBOUND = "outbound"
"""The intake of the agents' own sends: decided by the outbound policy, not replayed here."""


def history_replay(con: duckdb.DuckDBPyConnection, *, agent: str, policy: MailPolicy, since: datetime,
                   reading: ReadingLimits | None = None) -> ReplayReport:
    """Replay ``agent``'s inbound decisions since ``since`` (naive UTC) under ``policy``, on an open connection."""
    run = Replay(policy, agent=agent, since=since, reading=reading)
    for recorded in recorded_history(con, agent=agent.lower(), since=since):
        run.add(recorded)
    return run.report()


async def replay_history(database: Database, agent: str, policy: MailPolicy, since: datetime, *,
                         reading: ReadingLimits | None = None) -> ReplayReport:
    """``history_replay`` for a running appliance: on a cursor of its own, in a worker thread."""
    return await database.read(functools.partial(history_replay, agent=agent, policy=policy, since=since,
                                                 reading=reading))


def recorded_history(con: duckdb.DuckDBPyConnection, *, agent: str, since: datetime) -> Iterator[RecordedDecision]:
    """The agent's inbound decisions since ``since``, oldest first, each with its evidence and bytes."""
    after = 0
    while True:
        page = audit_rows.decisions_page(con, audit_rows.AuditFilter(since=since, agent=agent, after=after,
                                                                     limit=PAGE))
        if not page.rows:
            return
        rows = [dict(zip(page.columns, row, strict=True)) for row in page.rows]
        after = int(rows[-1]["seq"])
        inbound = [row for row in rows if row["intake"] != _OUTBOUND]
        ids = [str(row["decision_id"]) for row in inbound]
        evidence = evidence_rows.evidence_for(con, ids)
        refused = evidence_rows.refused_raws(con, ids)
        stored = stored_messages.raws_by_id(con, [e.email_id for e in evidence.values() if e.email_id])
        for row in inbound:
            decision_id = str(row["decision_id"])
            found = evidence.get(decision_id)
            raw: bytes | None = refused.get(decision_id)
            state: BytesState = "kept" if raw is not None else "not_kept"
            if found is not None and found.email_id is not None:
                copy = stored.get(found.email_id)
                raw = copy[found.stored_prefix or 0:] if copy is not None else None
                state = "kept" if copy is not None else "deleted"
            yield RecordedDecision(
                decision_id=decision_id, agent=str(row["agent"]), ts=row["ts"], sender=row["header_from"],
                subject=row["subject"], action=str(row["action"]), reason=row["reason"],
                facts=found.facts if found is not None else None, raw=raw, bytes_state=state)
