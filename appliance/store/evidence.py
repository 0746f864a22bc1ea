"""The evidence of each inbound decision: the facts the gate decided on, and a refused message's bytes.

``appliance policy replay`` judges the history again under another policy from
these, asking DNS nothing: the authentication results as verified then, the
envelope, the thread, the decision time, how the message read (or why it could
not be read), and where its bytes are. Accepted and quarantined messages' bytes
are in the store (``messages``; ``stored_prefix`` says how many bytes of our
trace fields precede the message there); a refused message's (bounced,
tempfailed, dropped) are kept here for ``[retention] refused_raw_days``.
Rows are written in the decision's own batch, so they commit with its audit row.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "Evidence",
    "delete_evidence_before",
    "delete_refused_raw_before",
    "evidence_for",
    "record_evidence",
    "refused_raws",
]

from collections.abc import Sequence
from datetime import datetime

import duckdb
import msgspec

from appliance.gate.decision import Envelope
from appliance.gate.replay import RecordedFacts
from appliance.mail import Unreadable
from appliance.mailauth.results import AuthResults
from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("decision_facts", "refused_raw"),
    ddl=(
        # evidence: what the gate knew when it decided, one row per inbound decision (appliance.store.evidence)
        """CREATE TABLE IF NOT EXISTS decision_facts (
        decision_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL,
        decided_at DOUBLE NOT NULL,
        envelope VARCHAR NOT NULL,
        thread_id VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        max_size BIGINT,
        auth VARCHAR,
        unreadable VARCHAR,
        email_id VARCHAR,
        stored_prefix INTEGER
    )""",
        # evidence: refused messages' raw bytes, for [retention] refused_raw_days
        """CREATE TABLE IF NOT EXISTS refused_raw (
        decision_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL,
        raw BLOB NOT NULL
    )""",
    ),
)

_FACT_COLUMNS = ("decision_id", "agent", "ts", "decided_at", "envelope", "thread_id", "size", "max_size", "auth",
                 "unreadable", "email_id", "stored_prefix")
_RAW_COLUMNS = ("decision_id", "agent", "ts", "raw")

_envelope = msgspec.json.Decoder(Envelope)
_auth = msgspec.json.Decoder(AuthResults)
_unreadable = msgspec.json.Decoder(Unreadable)


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """One decision's recorded facts, and where its stored copy is (accepted and quarantined mail)."""

    decision_id: str
    agent: str
    ts: datetime
    facts: RecordedFacts
    email_id: str | None = None
    """The stored copy in ``messages``, None when the message was not stored."""
    stored_prefix: int | None = None
    """Bytes of our trace fields before the message in the stored copy."""


def record_evidence(batch: Batch, evidence: Evidence, refused_raw: bytes | None = None) -> None:
    """Queue one decision's evidence in the writer's batch (the batch of its audit row), with its bytes if given."""
    f = evidence.facts
    encode = msgspec.json.encode
    batch.insert("decision_facts", _FACT_COLUMNS, (
        evidence.decision_id, evidence.agent, evidence.ts, f.decided_at, encode(f.envelope).decode(), f.thread_id,
        f.size, f.max_size, encode(f.auth).decode() if f.auth is not None else None,
        encode(f.unreadable).decode() if f.unreadable is not None else None, evidence.email_id,
        evidence.stored_prefix))
    if refused_raw is not None:
        batch.insert("refused_raw", _RAW_COLUMNS, (evidence.decision_id, evidence.agent, evidence.ts, refused_raw))


def evidence_for(con: duckdb.DuckDBPyConnection, decision_ids: Sequence[str]) -> dict[str, Evidence]:
    """The evidence recorded for each of ``decision_ids`` that has some, by decision id."""
    rows = con.execute(f"SELECT {', '.join(_FACT_COLUMNS)} FROM decision_facts "
                       "WHERE decision_id IN (SELECT unnest(?::VARCHAR[]))", [list(decision_ids)]).fetchall()
    found: dict[str, Evidence] = {}
    for (decision_id, agent, ts, decided_at, envelope, thread_id, size, max_size, auth, unreadable, email_id,
         prefix) in rows:
        facts = RecordedFacts(
            envelope=_envelope.decode(envelope), decided_at=float(decided_at), thread_id=str(thread_id),
            size=int(size), max_size=int(max_size) if max_size is not None else None,
            auth=_auth.decode(auth) if auth is not None else None,
            unreadable=_unreadable.decode(unreadable) if unreadable is not None else None)
        found[str(decision_id)] = Evidence(decision_id=str(decision_id), agent=str(agent), ts=ts, facts=facts,
                                           email_id=email_id, stored_prefix=prefix)
    return found


def refused_raws(con: duckdb.DuckDBPyConnection, decision_ids: Sequence[str]) -> dict[str, bytes]:
    """The kept bytes of the refused messages among ``decision_ids``, by decision id."""
    rows = con.execute("SELECT decision_id, raw FROM refused_raw WHERE decision_id IN (SELECT unnest(?::VARCHAR[]))",
                       [list(decision_ids)]).fetchall()
    return {str(decision_id): bytes(raw) for decision_id, raw in rows}


def delete_evidence_before(con: duckdb.DuckDBPyConnection, agent: str, cutoff: datetime) -> int:
    """Remove the agent's evidence (facts and bytes) of decisions before ``cutoff``; return the facts removed.

    Called by audit retention with the cutoff of the decision rows it removes.
    """
    counted = con.execute("SELECT count(*) FROM decision_facts WHERE agent = ? AND ts < ?", [agent, cutoff]).fetchone()
    con.execute("DELETE FROM decision_facts WHERE agent = ? AND ts < ?", [agent, cutoff])
    con.execute("DELETE FROM refused_raw WHERE agent = ? AND ts < ?", [agent, cutoff])
    return int(counted[0]) if counted else 0


def delete_refused_raw_before(con: duckdb.DuckDBPyConnection, agent: str, cutoff: datetime) -> int:
    """Remove the bytes of the agent's refused messages received before ``cutoff``; return how many."""
    counted = con.execute("SELECT count(*) FROM refused_raw WHERE agent = ? AND ts < ?", [agent, cutoff]).fetchone()
    con.execute("DELETE FROM refused_raw WHERE agent = ? AND ts < ?", [agent, cutoff])
    return int(counted[0]) if counted else 0
