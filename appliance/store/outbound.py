"""The outbound tables: the send queue (signed bytes once per message, one job per recipient domain,
every attempt), uploaded blobs, and idempotency keys with their first answer."""

from __future__ import annotations

__all__ = ["SCHEMA"]

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
