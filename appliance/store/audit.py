"""The audit tables: decisions (one hash-chained row per gate decision and per send), each agent's chain head,
retention checkpoints, and events (everything that is not a decision)."""

from __future__ import annotations

__all__ = ["SCHEMA"]

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
