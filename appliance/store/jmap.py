"""The JMAP tables: per-account states and their change log, mail waiting to be indexed, mailboxes,
the email index, mail written through JMAP, uploads and submissions."""

from __future__ import annotations

__all__ = ["SCHEMA"]

from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("jmap_accounts", "jmap_heads", "jmap_log_seq", "jmap_changes", "jmap_pending", "jmap_mailboxes",
            "jmap_emails", "jmap_local", "jmap_blobs", "jmap_submissions"),
    ddl=(
        # jmap: the JMAP view of the agents' mail (appliance.jmap): per-account states and their change log,
        # mail waiting to be indexed, mailboxes, the email index, mail written through JMAP, uploads, submissions
        """CREATE TABLE IF NOT EXISTS jmap_accounts (
        agent VARCHAR NOT NULL,
        epoch VARCHAR NOT NULL,          -- part of every state string: a rebuilt database never reuses one
        counter BIGINT NOT NULL          -- the account's last state number (all types share one counter)
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_heads (
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        state BIGINT NOT NULL,           -- the state number of the type's last change
        floor BIGINT NOT NULL            -- changes since an older state are gone (retention)
    )""",
        "CREATE SEQUENCE IF NOT EXISTS jmap_log_seq START 1",
        """CREATE TABLE IF NOT EXISTS jmap_changes (
        seq BIGINT NOT NULL,             -- position in the whole log (push reads what is new)
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        state BIGINT NOT NULL,
        id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,           -- created, updated, destroyed, counts (a Mailbox's counts only)
        thread_id VARCHAR,               -- an Email's thread (queryChanges with collapseThreads)
        ts TIMESTAMP NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_pending (
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        id VARCHAR NOT NULL,
        ts TIMESTAMP NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_mailboxes (
        agent VARCHAR NOT NULL,
        id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        parent_id VARCHAR,
        role VARCHAR,
        sort_order BIGINT NOT NULL,
        is_subscribed BOOLEAN NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_emails (
        email_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        source VARCHAR NOT NULL,         -- store (raw in messages) or local (raw in jmap_local)
        thread_id VARCHAR NOT NULL,
        mailbox_ids VARCHAR[] NOT NULL,
        keywords VARCHAR[] NOT NULL,
        received_at TIMESTAMP NOT NULL,
        sent_at TIMESTAMP,
        size BIGINT NOT NULL,
        message_id VARCHAR,
        subject VARCHAR NOT NULL,
        subject_sort VARCHAR NOT NULL,
        from_sort VARCHAR NOT NULL,
        to_sort VARCHAR NOT NULL,
        has_attachment BOOLEAN NOT NULL,
        preview VARCHAR NOT NULL,
        decision_id VARCHAR,
        summary VARCHAR NOT NULL,        -- JSON: header properties and the body structure (appliance.jmap.mime)
        search_from VARCHAR NOT NULL,    -- lowercased, for filters
        search_to VARCHAR NOT NULL,
        search_cc VARCHAR NOT NULL,
        search_bcc VARCHAR NOT NULL,
        search_body VARCHAR NOT NULL,
        header_text VARCHAR NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_local (
        email_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        raw BLOB NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_blobs (
        blob_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        size BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        data BLOB NOT NULL
    )""",
        """CREATE TABLE IF NOT EXISTS jmap_submissions (
        id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        identity_id VARCHAR NOT NULL,
        email_id VARCHAR NOT NULL,       -- the draft submitted
        sent_email_id VARCHAR NOT NULL,  -- the Sent copy the outbox stored
        thread_id VARCHAR NOT NULL,
        send_at TIMESTAMP NOT NULL,
        envelope VARCHAR NOT NULL        -- JSON
    )""",
    ),
)
