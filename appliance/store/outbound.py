"""The outbound tables: the send queue (signed bytes once per message, one job per recipient domain,
every attempt), uploaded blobs, and idempotency keys with their first answer."""

from __future__ import annotations

__all__ = [
    "SCHEMA",
    "JobState",
    "QueuedJob",
    "QueuedThread",
    "SentCount",
    "SentReply",
    "StoredBlob",
    "StoredKey",
    "add_attempt",
    "add_job",
    "add_queued_message",
    "approved_submission",
    "blobs_used_since",
    "claim_due_jobs",
    "delete_blobs_unused_since",
    "delete_keys_before",
    "drop_ended_bytes",
    "finish_job",
    "insert_blob",
    "job_recipients",
    "jobs_of_message",
    "key_since",
    "latest_queued_by_message_id",
    "mark_blobs_used",
    "next_attempt_after",
    "outbound_counts",
    "queued_email_id",
    "queued_thread",
    "replace_key",
    "reschedule_job",
    "sent_in_thread",
]

from collections.abc import Sequence
from datetime import datetime

import duckdb
import msgspec

from appliance.outbound.model import ApprovedSubmission, Delivery, OutboundMessage
from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("outbound_messages", "outbound_jobs", "outbound_attempts", "blobs", "idempotency_keys"),
    ddl=(
        # outbound: the send queue (appliance.outbound.queue). The signed bytes once per message (NULL once every
        # job of it ended); one job per recipient domain; every attempt.
        """CREATE TABLE IF NOT EXISTS outbound_messages (
        email_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        thread_id VARCHAR NOT NULL,
        message_id VARCHAR NOT NULL,
        mail_from VARCHAR NOT NULL,
        queued_at TIMESTAMP NOT NULL,
        size BIGINT NOT NULL,
        raw BLOB
    )""",
        """CREATE TABLE IF NOT EXISTS outbound_jobs (
        job_id VARCHAR PRIMARY KEY,
        email_id VARCHAR NOT NULL,
        agent VARCHAR NOT NULL,
        domain VARCHAR NOT NULL,
        recipients VARCHAR[] NOT NULL,
        status VARCHAR NOT NULL,         -- queued, sent, failed (5xx), bounced (retried for retry_for)
        attempts INTEGER NOT NULL,
        queued_at DOUBLE NOT NULL,       -- unix time the message was queued: retry_for counts from it
        next_attempt_at DOUBLE,
        last_code INTEGER,
        last_detail VARCHAR,
        peer VARCHAR,
        finished_at DOUBLE
    )""",
        """CREATE TABLE IF NOT EXISTS outbound_attempts (
        job_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        ts TIMESTAMP NOT NULL,
        status VARCHAR NOT NULL,         -- sent, retry, failed: what the transport reported
        code INTEGER,
        detail VARCHAR,
        peer VARCHAR,
        latency_ms DOUBLE
    )""",
        # outbound: attachments agents upload (appliance.outbound.blobs), gone 24 h after their last use;
        # idempotency keys of sends (appliance.outbound.idempotency), each with its first answer, kept 24 h
        """CREATE TABLE IF NOT EXISTS blobs (
        blob_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        content_type VARCHAR NOT NULL,
        filename VARCHAR,
        size BIGINT NOT NULL,
        sha256 VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        used_at TIMESTAMP NOT NULL,
        data BLOB NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS idempotency_keys (
        agent VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        request_sha256 VARCHAR NOT NULL,
        email_id VARCHAR NOT NULL,
        result VARCHAR NOT NULL,
        created_at DOUBLE NOT NULL,
        PRIMARY KEY (agent, key)
    )""",
    ),
)


class QueuedJob(msgspec.Struct, frozen=True, kw_only=True):
    """A due job, as the worker claims it."""

    job_id: str
    email_id: str
    agent: str
    thread_id: str
    message_id: str
    mail_from: str
    domain: str
    recipients: list[str]
    attempts: int
    """Attempts made before this one."""
    queued_at: float
    raw: bytes

    def delivery(self) -> Delivery:
        return Delivery(job_id=self.job_id, email_id=self.email_id, agent=self.agent, mail_from=self.mail_from,
                        recipients=list(self.recipients), raw=self.raw, attempts=self.attempts)


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """Where one queue job of a message stands, for the outbox's recipient status."""

    recipients: list[str]
    status: str
    attempts: int
    last_code: int | None
    last_detail: str | None
    peer: str | None


class QueuedThread(msgspec.Struct, frozen=True, kw_only=True):
    """The thread and Message-ID the queue recorded for a message."""

    thread_id: str
    message_id: str


class StoredBlob(msgspec.Struct, frozen=True, kw_only=True):
    """A row of ``blobs``, bytes included (``used_at`` aside)."""

    blob_id: str
    agent: str
    content_type: str
    """The media type and its parameters as uploaded (``text/plain; charset=utf-8``), type lowercased."""
    filename: str | None
    size: int
    sha256: str
    created_at: datetime
    """Naive UTC."""
    data: bytes


class StoredKey(msgspec.Struct, frozen=True, kw_only=True):
    """An idempotency key's record: the request's digest, its first answer (JSON) and when it was given."""

    request_sha256: str
    result: str
    """The ``SendResult`` as JSON text."""
    created_at: float
    """Unix seconds."""


# -- the send queue ---------------------------------------------------------------------------------------------

_MESSAGE_COLUMNS = ("email_id", "agent", "thread_id", "message_id", "mail_from", "queued_at", "size", "raw")
_JOB_COLUMNS = ("job_id", "email_id", "agent", "domain", "recipients", "status", "attempts", "queued_at",
                "next_attempt_at")
_ATTEMPT_COLUMNS = ("job_id", "attempt", "ts", "status", "code", "detail", "peer", "latency_ms")


def add_queued_message(batch: Batch, message: OutboundMessage, *, queued_at: datetime) -> None:
    """Buffer the queue's copy of ``message`` (its signed bytes) in the open batch."""
    batch.insert("outbound_messages", _MESSAGE_COLUMNS,
                 (message.email_id, message.agent, message.thread_id, message.message_id, message.mail_from,
                  queued_at, len(message.raw), message.raw))


def add_job(batch: Batch, *, job_id: str, email_id: str, agent: str, domain: str, recipients: list[str],
            status: str, attempts: int, queued_at: float, next_attempt_at: float) -> None:
    """Buffer one queue job (one recipient domain's share of a message) in the open batch."""
    batch.insert("outbound_jobs", _JOB_COLUMNS,
                 (job_id, email_id, agent, domain, recipients, status, attempts, queued_at, next_attempt_at))


_CLAIM = """
SELECT j.job_id, j.email_id, j.agent, m.thread_id, m.message_id, m.mail_from, j.domain, j.recipients, j.attempts,
       j.queued_at, m.raw
FROM outbound_jobs j JOIN outbound_messages m ON m.email_id = j.email_id
WHERE j.status = 'queued' AND j.next_attempt_at <= ? AND m.raw IS NOT NULL
  AND NOT list_contains(?::VARCHAR[], j.job_id)
ORDER BY j.next_attempt_at, j.job_id
LIMIT ?
"""


def claim_due_jobs(con: duckdb.DuckDBPyConnection, *, now: float, exclude: Sequence[str],
                   limit: int) -> list[QueuedJob]:
    """Up to ``limit`` queued jobs due at ``now`` with their message's bytes, oldest due first, none of ``exclude``."""
    rows = con.execute(_CLAIM, [now, list(exclude), limit]).fetchall()
    return [QueuedJob(job_id=r[0], email_id=r[1], agent=r[2], thread_id=r[3], message_id=r[4], mail_from=r[5],
                      domain=r[6], recipients=list(r[7]), attempts=r[8], queued_at=r[9], raw=bytes(r[10]))
            for r in rows]


def next_attempt_after(con: duckdb.DuckDBPyConnection, *, after: float) -> float | None:
    """The earliest ``next_attempt_at`` of a queued job later than ``after`` (None: nothing waits)."""
    row = con.execute("SELECT min(next_attempt_at) FROM outbound_jobs WHERE status = 'queued' "
                      "AND next_attempt_at > ?", [after]).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def add_attempt(batch: Batch, *, job_id: str, attempt: int, ts: datetime, status: str, code: int | None,
                detail: str, peer: str | None, latency_ms: float | None) -> None:
    """Buffer one delivery attempt's report in the open batch."""
    batch.insert("outbound_attempts", _ATTEMPT_COLUMNS, (job_id, attempt, ts, status, code, detail, peer, latency_ms))


def reschedule_job(con: duckdb.DuckDBPyConnection, *, job_id: str, attempts: int, next_attempt_at: float | None,
                   code: int | None, detail: str, peer: str | None) -> None:
    """Keep a queued job queued, due again at ``next_attempt_at``, with its last attempt's report."""
    con.execute("UPDATE outbound_jobs SET attempts = ?, next_attempt_at = ?, last_code = ?, last_detail = ?, "
                "peer = ? WHERE job_id = ? AND status = 'queued'",
                [attempts, next_attempt_at, code, detail, peer, job_id])


def finish_job(con: duckdb.DuckDBPyConnection, *, job_id: str, status: str, attempts: int, code: int | None,
               detail: str, peer: str | None, finished_at: float) -> bool:
    """End a queued job with ``status``; False when it was no longer queued (ended meanwhile)."""
    changed = con.execute(
        "UPDATE outbound_jobs SET status = ?, attempts = ?, next_attempt_at = NULL, last_code = ?, last_detail = ?, "
        "peer = ?, finished_at = ? WHERE job_id = ? AND status = 'queued' RETURNING job_id",
        [status, attempts, code, detail, peer, finished_at, job_id]).fetchall()
    return bool(changed)


def drop_ended_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """Set ``raw`` to NULL on every queued message no queued job waits for; return how many."""
    rows = con.execute("UPDATE outbound_messages SET raw = NULL WHERE raw IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM outbound_jobs j WHERE j.email_id = outbound_messages.email_id "
                       "AND j.status = 'queued') RETURNING email_id").fetchall()
    return len(rows)


def queued_email_id(con: duckdb.DuckDBPyConnection, email_id: str, *, agent: str | None = None) -> str | None:
    """``email_id`` when the queue has that message (``agent``'s, when given), else None."""
    scope, params = ("AND agent = ?", [agent]) if agent else ("", [])
    row = con.execute(f"SELECT email_id FROM outbound_messages WHERE email_id = ? {scope}",
                      [email_id, *params]).fetchone()
    return str(row[0]) if row else None


def latest_queued_by_message_id(con: duckdb.DuckDBPyConnection, message_id: str, *,
                                agent: str | None = None) -> str | None:
    """The email id of the latest queued message with ``message_id`` (``agent``'s, when given), or None."""
    scope, params = ("AND agent = ?", [agent]) if agent else ("", [])
    row = con.execute(f"SELECT email_id FROM outbound_messages WHERE message_id = ? {scope} "
                      "ORDER BY queued_at DESC LIMIT 1", [message_id, *params]).fetchone()
    return str(row[0]) if row else None


def approved_submission(con: duckdb.DuckDBPyConnection, agent: str, message_id: str) -> ApprovedSubmission | None:
    """``agent``'s latest queued message with ``message_id`` whose bytes are kept, with the recipients its
    queued jobs are for; None when there is none."""
    row = con.execute("SELECT email_id, raw FROM outbound_messages WHERE message_id = ? AND agent = ? "
                      "AND raw IS NOT NULL ORDER BY queued_at DESC LIMIT 1", [message_id, agent]).fetchone()
    if row is None:
        return None
    recipients = [str(a).lower() for (a,) in con.execute(
        "SELECT DISTINCT unnest(recipients) FROM outbound_jobs WHERE email_id = ? AND status = 'queued'",
        [row[0]]).fetchall()]
    return ApprovedSubmission(email_id=str(row[0]), recipients=recipients, raw=bytes(row[1]))


def job_recipients(con: duckdb.DuckDBPyConnection, email_id: str) -> list[str]:
    """Every recipient any queue job of ``email_id`` was for, each once."""
    return [str(a) for (a,) in con.execute(
        "SELECT DISTINCT unnest(recipients) FROM outbound_jobs WHERE email_id = ?", [email_id]).fetchall()]


def queued_thread(con: duckdb.DuckDBPyConnection, email_id: str) -> QueuedThread | None:
    """The thread id and Message-ID the queue recorded for ``email_id``, or None."""
    row = con.execute("SELECT thread_id, message_id FROM outbound_messages WHERE email_id = ?",
                      [email_id]).fetchone()
    return QueuedThread(thread_id=str(row[0]), message_id=str(row[1])) if row else None


def jobs_of_message(con: duckdb.DuckDBPyConnection, email_id: str) -> list[JobState]:
    """Every queue job of ``email_id``, in job id order (oldest first)."""
    return [JobState(recipients=list(recipients), status=status, attempts=attempts, last_code=code,
                     last_detail=detail, peer=peer)
            for recipients, status, attempts, code, detail, peer in con.execute(
                "SELECT recipients, status, attempts, last_code, last_detail, peer FROM outbound_jobs "
                "WHERE email_id = ? ORDER BY job_id", [email_id]).fetchall()]


# -- blobs ------------------------------------------------------------------------------------------------------

_BLOB_COLUMNS = ("blob_id", "agent", "content_type", "filename", "size", "sha256", "created_at", "used_at", "data")


def insert_blob(con: duckdb.DuckDBPyConnection, blob: StoredBlob) -> None:
    """Insert ``blob``, used at its creation."""
    con.execute(f"INSERT INTO blobs ({', '.join(_BLOB_COLUMNS)}) VALUES ({', '.join('?' for _ in _BLOB_COLUMNS)})",
                [blob.blob_id, blob.agent, blob.content_type, blob.filename, blob.size, blob.sha256,
                 blob.created_at, blob.created_at, blob.data])


def blobs_used_since(con: duckdb.DuckDBPyConnection, agent: str, blob_ids: list[str],
                     since: datetime) -> list[StoredBlob]:
    """``agent``'s blobs among ``blob_ids`` (not empty) last used at ``since`` or later."""
    rows = con.execute(
        f"SELECT blob_id, agent, content_type, filename, size, sha256, created_at, data FROM blobs "
        f"WHERE agent = ? AND used_at >= ? AND blob_id IN ({', '.join('?' for _ in blob_ids)})",
        [agent, since, *blob_ids]).fetchall()
    return [StoredBlob(blob_id=r[0], agent=r[1], content_type=r[2], filename=r[3], size=int(r[4]), sha256=r[5],
                       created_at=r[6], data=bytes(r[7])) for r in rows]


def mark_blobs_used(batch: Batch, blob_ids: list[str], used_at: datetime) -> None:
    """Set ``used_at`` of the blobs ``blob_ids`` (none: nothing), in the writer's open batch."""
    if blob_ids:
        batch.con.execute(f"UPDATE blobs SET used_at = ? WHERE blob_id IN ({', '.join('?' for _ in blob_ids)})",
                          [used_at, *blob_ids]).fetchall()


def delete_blobs_unused_since(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> int:
    """Delete the blobs last used before ``cutoff``; return how many."""
    return len(con.execute("DELETE FROM blobs WHERE used_at < ? RETURNING blob_id", [cutoff]).fetchall())


# -- idempotency keys -------------------------------------------------------------------------------------------


def key_since(con: duckdb.DuckDBPyConnection, agent: str, key: str, since: float) -> StoredKey | None:
    """``agent``'s record of ``key`` created at ``since`` or later, or None."""
    row = con.execute("SELECT request_sha256, result, created_at FROM idempotency_keys "
                      "WHERE agent = ? AND key = ? AND created_at >= ?", [agent, key, since]).fetchone()
    if row is None:
        return None
    return StoredKey(request_sha256=str(row[0]), result=str(row[1]), created_at=float(row[2]))


def replace_key(batch: Batch, *, agent: str, key: str, request_sha256: str, email_id: str, result: str,
                created_at: float) -> None:
    """Record ``key`` in the writer's open batch, replacing any earlier record of it; ``result`` is JSON text."""
    batch.con.execute("DELETE FROM idempotency_keys WHERE agent = ? AND key = ?", [agent, key]).fetchall()
    batch.insert("idempotency_keys", ("agent", "key", "request_sha256", "email_id", "result", "created_at"),
                 (agent, key, request_sha256, email_id, result, created_at))


def delete_keys_before(con: duckdb.DuckDBPyConnection, cutoff: float) -> int:
    """Delete the idempotency keys created before ``cutoff``; return how many."""
    return len(con.execute("DELETE FROM idempotency_keys WHERE created_at < ? RETURNING key", [cutoff]).fetchall())


# -- the dashboard's reads ----------------------------------------------------------------------------------------


class SentReply(msgspec.Struct, frozen=True, kw_only=True):
    """A message an agent sent, with where its queue jobs stand."""

    email_id: str
    message_id: str
    queued_at: datetime
    size: int
    jobs: list[JobState]


class SentCount(msgspec.Struct, frozen=True, kw_only=True):
    """Queue jobs of one agent in one status (queued, sent, failed, bounced), and their recipients."""

    agent: str
    status: str
    jobs: int
    recipients: int


def sent_in_thread(con: duckdb.DuckDBPyConnection, agent: str, thread_id: str, *, since: datetime,
                   limit: int = 50) -> list[SentReply]:
    """What ``agent`` sent in ``thread_id`` at or after ``since``, oldest first (a decision's replies)."""
    found = con.execute("SELECT email_id, message_id, queued_at, size FROM outbound_messages WHERE agent = ? "
                        "AND thread_id = ? AND queued_at >= ? ORDER BY queued_at, email_id LIMIT ?",
                        [agent, thread_id, since, limit]).fetchall()
    return [SentReply(email_id=e, message_id=m, queued_at=q, size=int(s), jobs=jobs_of_message(con, e))
            for e, m, q, s in found]


def outbound_counts(con: duckdb.DuckDBPyConnection, *, since: float) -> list[SentCount]:
    """Queue jobs queued since ``since`` (unix seconds) by agent and status, in that order."""
    return [SentCount(agent=a, status=st, jobs=int(j), recipients=int(r)) for a, st, j, r in con.execute(
        "SELECT agent, status, count(*), sum(len(recipients)) FROM outbound_jobs WHERE queued_at >= ? "
        "GROUP BY ALL ORDER BY ALL", [since]).fetchall()]
