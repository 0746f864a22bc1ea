"""The JMAP view of the agents' mail: mailboxes, the email index, mail written through JMAP, uploads and
submissions (the states and their change log are ``appliance.store.changes``).

The statements only: what the rows mean (filters, sorts, what a write changes) is ``appliance.jmap``'s.
"""

from __future__ import annotations

__all__ = [
    "EMAIL_COLUMNS",
    "MAX_SPANS",
    "SCHEMA",
    "EmailQuery",
    "EmailRow",
    "EmailSource",
    "EmailState",
    "IndexedEmail",
    "ListedEmail",
    "MailboxCounts",
    "MailboxMember",
    "MailboxRow",
    "Span",
    "SubmissionRow",
    "UnindexedMessage",
    "Upload",
    "count_matching",
    "delete_blobs_before",
    "delete_index_rows",
    "delete_local",
    "delete_mailbox",
    "delete_submissions",
    "email_count",
    "email_rows",
    "email_source",
    "email_sources",
    "email_states",
    "emails_in_threads",
    "emails_with_message_ids",
    "existing_emails",
    "existing_mailboxes",
    "existing_threads",
    "indexed_store_count",
    "insert_emails",
    "insert_mailbox",
    "insert_role_mailboxes",
    "insert_submissions",
    "listed_emails",
    "listed_emails_among",
    "local_raw",
    "local_raws",
    "mailbox_counts",
    "mailbox_members",
    "mailboxes",
    "matching_page",
    "position_of",
    "positions_in",
    "save_blob",
    "save_local",
    "set_email_state",
    "submissions",
    "thread_mailboxes",
    "thread_member_subquery",
    "thread_of_references",
    "threads",
    "threads_of_emails",
    "unindexed_messages",
    "update_mailbox",
    "upload",
    "vanished_emails",
]

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import msgspec

from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("jmap_mailboxes", "jmap_emails", "jmap_local", "jmap_blobs", "jmap_submissions"),
    ddl=(
        # jmap: the JMAP view of the agents' mail (appliance.jmap): mailboxes, the email index, mail written
        # through JMAP, uploads, submissions
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


# -- mailboxes -------------------------------------------------------------------------------------


class MailboxRow(msgspec.Struct, frozen=True, kw_only=True):
    """A mailbox as ``jmap_mailboxes`` keeps it."""

    id: str
    name: str
    parent_id: str | None
    role: str | None
    sort_order: int
    is_subscribed: bool


class MailboxCounts(msgspec.Struct, frozen=True, gc=False):
    """A mailbox's totalEmails, unreadEmails, totalThreads and unreadThreads."""

    total_emails: int
    unread_emails: int
    total_threads: int
    unread_threads: int


class MailboxMember(msgspec.Struct, frozen=True):
    """An email in a mailbox, with its mailboxes and keywords."""

    email_id: str
    mailbox_ids: list[str]
    keywords: list[str]


_MAILBOX_COLUMNS = "id, name, parent_id, role, sort_order, is_subscribed"


def insert_role_mailboxes(con: duckdb.DuckDBPyConnection, agent: str, roles: Sequence[tuple[str, str, int]]) -> None:
    """Insert the role mailboxes (role, name, sortOrder) of a new account: each one's id is its role."""
    con.execute("INSERT INTO jmap_mailboxes (agent, id, name, parent_id, role, sort_order, is_subscribed) "
                "SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), NULL, unnest(?::VARCHAR[]), "
                "unnest(?::BIGINT[]), true",
                [agent, [r for r, _, _ in roles], [n for _, n, _ in roles], [r for r, _, _ in roles],
                 [o for _, _, o in roles]])


def mailboxes(con: duckdb.DuckDBPyConnection, agent: str, ids: Sequence[str] | None = None) -> list[MailboxRow]:
    """The agent's mailboxes (only ``ids`` when given), by sortOrder, name and id."""
    where, args = "agent = ?", [agent]
    if ids is not None:
        where += " AND id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(list(ids))  # type: ignore[arg-type]
    rows = con.execute(f"SELECT {_MAILBOX_COLUMNS} FROM jmap_mailboxes WHERE {where} ORDER BY sort_order, name, id",
                       args).fetchall()
    return [MailboxRow(id=r[0], name=r[1], parent_id=r[2], role=r[3], sort_order=int(r[4]), is_subscribed=r[5])
            for r in rows]


def insert_mailbox(con: duckdb.DuckDBPyConnection, agent: str, row: MailboxRow) -> None:
    """Insert one mailbox."""
    con.execute("INSERT INTO jmap_mailboxes (agent, id, name, parent_id, role, sort_order, is_subscribed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [agent, row.id, row.name, row.parent_id, row.role, row.sort_order, row.is_subscribed])


def update_mailbox(con: duckdb.DuckDBPyConnection, agent: str, row: MailboxRow) -> None:
    """Write a mailbox's properties."""
    con.execute("UPDATE jmap_mailboxes SET name = ?, parent_id = ?, role = ?, sort_order = ?, is_subscribed = ? "
                "WHERE agent = ? AND id = ?",
                [row.name, row.parent_id, row.role, row.sort_order, row.is_subscribed, agent, row.id])


def delete_mailbox(con: duckdb.DuckDBPyConnection, agent: str, mailbox_id: str) -> None:
    """Remove one mailbox."""
    con.execute("DELETE FROM jmap_mailboxes WHERE agent = ? AND id = ?", [agent, mailbox_id])


def existing_mailboxes(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    """Those of ``ids`` that are the agent's mailboxes."""
    return {r[0] for r in con.execute("SELECT id FROM jmap_mailboxes WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                                      "AND agent = ?", [ids, agent]).fetchall()}


def mailbox_counts(con: duckdb.DuckDBPyConnection, agent: str) -> dict[str, MailboxCounts]:
    """mailbox id -> its counts, RFC 8621 2's rules.

    Unread: neither ``$seen`` nor ``$draft``. A thread counts as unread in a mailbox holding one of
    its emails when any of its emails is unread, except that mail only in the trash is ignored for
    the other mailboxes, and mail outside the trash for the trash.
    """
    rows = con.execute("""
        WITH e AS (
            SELECT thread_id, mailbox_ids,
                   NOT (list_contains(keywords, '$seen') OR list_contains(keywords, '$draft')) AS unread,
                   list_contains(mailbox_ids, 'trash') AS in_trash,
                   mailbox_ids = ['trash'] AS only_trash
            FROM jmap_emails WHERE agent = ?),
        t AS (
            SELECT thread_id, bool_or(unread AND NOT only_trash) AS unread_outside,
                   bool_or(unread AND in_trash) AS unread_trash
            FROM e GROUP BY thread_id),
        m AS (SELECT unnest(mailbox_ids) AS mailbox, thread_id, unread FROM e)
        SELECT m.mailbox, count(*), count(*) FILTER (WHERE m.unread), count(DISTINCT m.thread_id),
               count(DISTINCT m.thread_id) FILTER (WHERE CASE WHEN m.mailbox = 'trash' THEN t.unread_trash
                                                             ELSE t.unread_outside END)
        FROM m JOIN t USING (thread_id) GROUP BY m.mailbox""", [agent]).fetchall()
    return {str(r[0]): MailboxCounts(int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def mailbox_members(con: duckdb.DuckDBPyConnection, agent: str, mailbox_id: str) -> list[MailboxMember]:
    """The agent's emails in ``mailbox_id``."""
    rows = con.execute("SELECT email_id, mailbox_ids, keywords FROM jmap_emails WHERE agent = ? AND "
                       "list_contains(mailbox_ids, ?)", [agent, mailbox_id]).fetchall()
    return [MailboxMember(str(r[0]), list(r[1]), list(r[2])) for r in rows]


# -- the email index: reads ------------------------------------------------------------------------


class EmailRow(msgspec.Struct, kw_only=True, gc=False):
    """An index row as Email/get reads it (not tracked by the garbage collector: the list index keeps
    thousands, and it holds nothing that could form a cycle)."""

    email_id: str
    source: str
    thread_id: str
    mailbox_ids: tuple[str, ...]
    keywords: tuple[str, ...]
    received_at: datetime
    size: int
    has_attachment: bool
    preview: str
    decision_id: str | None
    summary_json: str
    """Header properties and the body structure, as JSON (``appliance.jmap.mime.Summary``)."""


class ListedEmail(msgspec.Struct, frozen=True, gc=False):
    """What the list index keeps of an Email: its sort key (receivedAt, id), thread and mailboxes."""

    email_id: str
    received_at: datetime
    thread_id: str
    mailbox_ids: list[str]


class EmailState(msgspec.Struct, frozen=True):
    """An Email's thread, mailboxes and keywords (what a write may change)."""

    email_id: str
    thread_id: str
    mailbox_ids: list[str]
    keywords: list[str]


class EmailSource(msgspec.Struct, frozen=True):
    """Where an Email's bytes are: ``store`` (``messages``) or ``local`` (``jmap_local``)."""

    email_id: str
    source: str


_ROW = ("email_id, source, thread_id, mailbox_ids, keywords, received_at, size, has_attachment, preview, "
        "decision_id, summary")


def _email_row(r: tuple[Any, ...]) -> EmailRow:
    return EmailRow(email_id=r[0], source=r[1], thread_id=r[2], mailbox_ids=tuple(r[3]), keywords=tuple(r[4]),
                    received_at=r[5], size=int(r[6]), has_attachment=bool(r[7]), preview=r[8], decision_id=r[9],
                    summary_json=r[10])


MAX_SPANS = 8
"""Beyond this many separate runs, one scan of the table is cheaper than a query per run."""
Span = tuple[list[str], datetime, datetime]
"""Some email ids and the receivedAt range they lie in (``appliance.jmap.cache.AccountIndex.spans``)."""


def email_rows(con: duckdb.DuckDBPyConnection, agent: str, ids: Sequence[str] | None,
               spans: Sequence[Span] | None = None) -> dict[str, EmailRow]:
    """The agent's emails among ``ids`` (all of them when None), by id.

    With ``spans``, each group of ids is read with its receivedAt range as well: rows are stored
    in arrival order, so the range lets DuckDB skip the rest of the table instead of reading every
    row's columns to find fifty.
    """
    if ids is None:
        rows = con.execute(f"SELECT {_ROW} FROM jmap_emails WHERE agent = ?", [agent]).fetchall()
    elif spans and len(spans) <= MAX_SPANS:
        rows = []
        for group, low, high in spans:
            rows += con.execute(f"SELECT {_ROW} FROM jmap_emails WHERE received_at BETWEEN ? AND ? AND email_id IN "
                                "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [low, high, group, agent]).fetchall()
    else:
        rows = con.execute(f"SELECT {_ROW} FROM jmap_emails WHERE email_id IN (SELECT unnest(?::VARCHAR[])) "
                           "AND agent = ?", [list(ids), agent]).fetchall()
    return {r[0]: _email_row(r) for r in rows}


def listed_emails(con: duckdb.DuckDBPyConnection, agent: str) -> list[ListedEmail]:
    """Every one of the agent's Emails as the list index keeps it, by (receivedAt, id)."""
    rows = con.execute("SELECT email_id, received_at, thread_id, mailbox_ids FROM jmap_emails WHERE agent = ? "
                       "ORDER BY received_at, email_id", [agent]).fetchall()
    return [ListedEmail(*r) for r in rows]


def listed_emails_among(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> list[ListedEmail]:
    """Those of ``ids`` that are the agent's Emails, as the list index keeps them."""
    rows = con.execute("SELECT email_id, received_at, thread_id, mailbox_ids FROM jmap_emails WHERE email_id IN "
                       "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()
    return [ListedEmail(*r) for r in rows]


def email_count(con: duckdb.DuckDBPyConnection, agent: str) -> int:
    """How many Emails the agent has."""
    row = con.execute("SELECT count(*) FROM jmap_emails WHERE agent = ?", [agent]).fetchone()
    return int(row[0]) if row else 0


def existing_emails(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    """Those of ``ids`` that are the agent's Emails."""
    return {r[0] for r in con.execute("SELECT email_id FROM jmap_emails WHERE email_id IN "
                                      "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()}


def existing_threads(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    """Those of ``ids`` that are threads of the agent's Emails."""
    return {r[0] for r in con.execute("SELECT DISTINCT thread_id FROM jmap_emails WHERE thread_id IN "
                                      "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()}


def threads(con: duckdb.DuckDBPyConnection, agent: str, ids: Sequence[str] | None) -> dict[str, list[str]]:
    """thread id -> its email ids, oldest first (RFC 8621 3: sorted by receivedAt)."""
    where, args = "agent = ?", [agent]
    if ids is not None:
        where = "thread_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?"
        args = [list(ids), agent]  # type: ignore[list-item]
    rows = con.execute(f"SELECT thread_id, list(email_id ORDER BY received_at, email_id) FROM jmap_emails "
                       f"WHERE {where} GROUP BY thread_id", args).fetchall()
    return {str(t): list(e) for t, e in rows}


def threads_of_emails(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    """The threads of those of ``ids`` that are the agent's Emails."""
    return {str(r[0]) for r in con.execute(
        "SELECT DISTINCT thread_id FROM jmap_emails WHERE agent = ? AND email_id IN (SELECT unnest(?::VARCHAR[]))",
        [agent, ids]).fetchall()}


def emails_in_threads(con: duckdb.DuckDBPyConnection, agent: str, thread_ids: list[str]) -> list[str]:
    """The ids of the agent's Emails in ``thread_ids``."""
    return [str(r[0]) for r in con.execute(
        "SELECT email_id FROM jmap_emails WHERE agent = ? AND thread_id IN (SELECT unnest(?::VARCHAR[]))",
        [agent, thread_ids]).fetchall()]


def thread_mailboxes(con: duckdb.DuckDBPyConnection, agent: str, thread_ids: list[str]) -> set[str]:
    """The mailboxes holding any of the agent's Emails of ``thread_ids``."""
    rows = con.execute("SELECT DISTINCT unnest(mailbox_ids) FROM jmap_emails WHERE thread_id IN "
                       "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [thread_ids, agent]).fetchall()
    return {str(r[0]) for r in rows}


def email_states(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> list[EmailState]:
    """The thread, mailboxes and keywords of those of ``ids`` that are the agent's Emails."""
    rows = con.execute("SELECT email_id, thread_id, mailbox_ids, keywords FROM jmap_emails WHERE email_id IN "
                       "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()
    return [EmailState(str(r[0]), str(r[1]), list(r[2]), list(r[3])) for r in rows]


def email_source(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> str | None:
    """Where one of the agent's Emails keeps its bytes (``store`` or ``local``), or None for no such Email."""
    row = con.execute("SELECT source FROM jmap_emails WHERE email_id = ? AND agent = ?", [email_id, agent]).fetchone()
    return str(row[0]) if row else None


def email_sources(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> list[EmailSource]:
    """Where those of ``ids`` that are the agent's Emails keep their bytes."""
    rows = con.execute("SELECT email_id, source FROM jmap_emails WHERE email_id IN (SELECT unnest(?::VARCHAR[])) "
                       "AND agent = ?", [ids, agent]).fetchall()
    return [EmailSource(str(i), str(s)) for i, s in rows]


def thread_of_references(con: duckdb.DuckDBPyConnection, agent: str, message_ids: list[str]) -> str | None:
    """The thread of the agent's newest email whose Message-ID is one of ``message_ids`` (mail written here)."""
    if not message_ids:
        return None
    row = con.execute("SELECT thread_id FROM jmap_emails WHERE agent = ? AND message_id IN "
                      "(SELECT unnest(?::VARCHAR[])) ORDER BY received_at DESC LIMIT 1",
                      [agent, message_ids]).fetchone()
    return str(row[0]) if row else None


def emails_with_message_ids(con: duckdb.DuckDBPyConnection, agent: str, message_ids: list[str]) -> list[str]:
    """The ids of the agent's Emails whose Message-ID is one of ``message_ids``."""
    return [str(r[0]) for r in con.execute(
        "SELECT email_id FROM jmap_emails WHERE agent = ? AND message_id IN (SELECT unnest(?::VARCHAR[]))",
        [agent, message_ids]).fetchall()]


def indexed_store_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many Emails of the store (``messages``) the index holds, all accounts."""
    row = con.execute("SELECT count(*) FROM jmap_emails WHERE source = 'store'").fetchone()
    return int(row[0]) if row else 0


# -- the email index and the store: the indexer's two anti-joins ----------------------------------
# They read ``messages`` (appliance.store.messages) with ``jmap_emails``: split into one read per
# owner, each would fetch every id of both tables into Python (100,000 emails: about 10 times the
# anti-join's time, on every reconcile), so they stay whole here.


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


class UnindexedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message the index should hold, without its bytes."""

    email_id: str
    agent: str
    mailbox: str
    thread_id: str
    received_at: datetime
    size: int
    keywords: list[str]
    decision_id: str


def unindexed_messages(con: duckdb.DuckDBPyConnection, agents: Sequence[str], mailboxes: Sequence[str],
                       ids: Sequence[str] | None = None, limit: int = 1_000_000) -> list[UnindexedMessage]:
    """Stored messages of ``agents`` in ``mailboxes`` the index lacks (only among ``ids`` when given), oldest first."""
    where = f"m.agent IN (SELECT unnest(?::VARCHAR[])) AND m.mailbox IN ({_marks(mailboxes)})"
    args: list[Any] = [list(agents), *mailboxes]
    if ids is not None:
        where += " AND m.email_id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(list(ids))
    rows = con.execute(
        f"SELECT m.email_id, m.agent, m.mailbox, m.thread_id, m.received_at, m.size, m.keywords, m.decision_id "
        f"FROM messages m WHERE {where} AND NOT EXISTS (SELECT 1 FROM jmap_emails j WHERE j.email_id = m.email_id) "
        f"ORDER BY m.received_at LIMIT ?", [*args, limit]).fetchall()
    return [UnindexedMessage(email_id=r[0], agent=r[1], mailbox=r[2], thread_id=r[3], received_at=r[4],
                             size=int(r[5]), keywords=list(r[6] or []), decision_id=r[7]) for r in rows]


def vanished_emails(con: duckdb.DuckDBPyConnection, mailboxes: Sequence[str]) -> list[tuple[str, str]]:
    """(agent, email_id) of indexed store emails no longer stored in any of ``mailboxes``."""
    rows = con.execute("SELECT j.agent, j.email_id FROM jmap_emails j WHERE j.source = 'store' AND NOT EXISTS "
                       f"(SELECT 1 FROM messages m WHERE m.email_id = j.email_id AND m.mailbox IN "
                       f"({_marks(mailboxes)}))", list(mailboxes)).fetchall()
    return [(str(a), str(i)) for a, i in rows]


# -- Email/query: the statements over a compiled filter and sort ---------------------------------


class EmailQuery(msgspec.Struct, frozen=True):
    """A compiled filter and sort (``appliance.jmap.query``): a WHERE and an ORDER BY over ``jmap_emails e``."""

    where: str
    where_args: list[Any]
    order: str
    order_args: list[Any]
    collapse: bool
    """Only the first email of each thread, in ``order`` (``collapseThreads``)."""


def thread_member_subquery(*, negated: bool) -> str:
    """``SELECT 1`` of the emails of ``e``'s thread having (with ``negated``: lacking) keyword ``?``."""
    return (f"SELECT 1 FROM jmap_emails t WHERE t.agent = e.agent AND t.thread_id = e.thread_id AND "
            f"{'NOT ' if negated else ''}list_contains(t.keywords, ?)")


def _source(query: EmailQuery) -> tuple[str, list[Any]]:
    """The (collapsed) result set as a subquery aliased ``e``; its first parameter is the agent."""
    sql = f"SELECT * FROM jmap_emails e WHERE e.agent = ? AND {query.where}"
    args: list[Any] = [*query.where_args]
    if query.collapse:
        sql += f" QUALIFY row_number() OVER (PARTITION BY e.thread_id ORDER BY {query.order}) = 1"
        args += query.order_args
    return f"({sql}) e", args


def count_matching(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery) -> int:
    """How many of the agent's Emails the query selects."""
    source, source_args = _source(query)
    row = con.execute(f"SELECT count(*) FROM {source}", [agent, *source_args]).fetchone()
    return int(row[0]) if row else 0


def positions_in(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery,
                 ids: list[str]) -> list[tuple[str, int]]:
    """(id, 0-based position in the query's order) of those of ``ids`` it selects, by position."""
    source, source_args = _source(query)
    found = con.execute(f"SELECT email_id, rn FROM (SELECT e.email_id, row_number() OVER (ORDER BY {query.order}) "
                        f"- 1 AS rn FROM {source}) WHERE email_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY rn",
                        [*query.order_args, agent, *source_args, ids]).fetchall()
    return [(str(i), int(n)) for i, n in found]


def position_of(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery, email_id: str) -> int | None:
    """The 0-based position of ``email_id`` in the query's order, or None when it does not select it."""
    source, source_args = _source(query)
    found = con.execute(f"SELECT rn FROM (SELECT e.email_id, row_number() OVER (ORDER BY {query.order}) - 1 "
                        f"AS rn FROM {source}) WHERE email_id = ?",
                        [*query.order_args, agent, *source_args, email_id]).fetchone()
    return int(found[0]) if found is not None else None


def matching_page(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery, *, limit: int,
                  offset: int) -> list[str]:
    """The ids the query selects, in its order, ``limit`` of them from ``offset``."""
    source, source_args = _source(query)
    rows = con.execute(f"SELECT e.email_id FROM {source} ORDER BY {query.order} LIMIT ? OFFSET ?",
                       [agent, *source_args, *query.order_args, limit, offset]).fetchall()
    return [r[0] for r in rows]


# -- the email index: writes -----------------------------------------------------------------------


class IndexedEmail(msgspec.Struct, frozen=True, kw_only=True):
    """A ``jmap_emails`` row (``EMAIL_COLUMNS``), as ``appliance.jmap.local.index_values`` computes it."""

    email_id: str
    agent: str
    source: str
    thread_id: str
    mailbox_ids: list[str]
    keywords: list[str]
    received_at: datetime
    sent_at: datetime | None
    size: int
    message_id: str | None
    subject: str
    subject_sort: str
    from_sort: str
    to_sort: str
    has_attachment: bool
    preview: str
    decision_id: str | None
    summary: str
    search_from: str
    search_to: str
    search_cc: str
    search_bcc: str
    search_body: str
    header_text: str


EMAIL_COLUMNS = IndexedEmail.__struct_fields__
"""The columns of ``jmap_emails``, in ``IndexedEmail`` order."""


def insert_emails(batch: Batch, rows: Iterable[IndexedEmail]) -> None:
    """Queue index rows in the writer's open batch."""
    for row in rows:
        batch.insert("jmap_emails", EMAIL_COLUMNS, msgspec.structs.astuple(row))


def set_email_state(con: duckdb.DuckDBPyConnection, agent: str,
                    updates: Mapping[str, tuple[list[str], list[str]]]) -> None:
    """New mailboxIds and keywords for some of the agent's emails: id -> (mailbox_ids, keywords)."""
    if not updates:
        return
    ids = list(updates)
    con.execute("UPDATE jmap_emails SET mailbox_ids = u.m, keywords = u.k FROM (SELECT unnest(?::VARCHAR[]) AS i, "
                "unnest(?::VARCHAR[][]) AS m, unnest(?::VARCHAR[][]) AS k) AS u "
                "WHERE jmap_emails.email_id = u.i AND jmap_emails.agent = ?",
                [ids, [updates[i][0] for i in ids], [updates[i][1] for i in ids], agent])


def delete_index_rows(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> None:
    """Remove those of ``ids`` that are the agent's from the index (their bytes stay)."""
    con.execute("DELETE FROM jmap_emails WHERE email_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent])


# -- mail written through JMAP ---------------------------------------------------------------------


def save_local(batch: Batch, agent: str, email_id: str, raw: bytes) -> None:
    """Queue the bytes of an Email written through JMAP in the writer's open batch."""
    batch.insert("jmap_local", ("email_id", "agent", "raw"), (email_id, agent, raw))


def local_raw(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> bytes | None:
    """The bytes of one of the agent's Emails written through JMAP, or None."""
    found = con.execute("SELECT raw FROM jmap_local WHERE email_id = ? AND agent = ?", [email_id, agent]).fetchone()
    return bytes(found[0]) if found else None


def local_raws(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> dict[str, bytes]:
    """The bytes of those of ``ids`` the agent wrote through JMAP, by id."""
    found = con.execute("SELECT email_id, raw FROM jmap_local WHERE email_id IN (SELECT unnest(?::VARCHAR[])) "
                        "AND agent = ?", [ids, agent]).fetchall()
    return {str(i): bytes(r) for i, r in found}


def delete_local(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> None:
    """Remove the bytes of those of ``ids`` the agent wrote through JMAP."""
    con.execute("DELETE FROM jmap_local WHERE email_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent])


# -- uploads ---------------------------------------------------------------------------------------


class Upload(msgspec.Struct, frozen=True):
    """An uploaded blob's bytes and media type."""

    data: bytes
    type: str


def save_blob(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str, type_: str, data: bytes,
              created_at: datetime) -> None:
    """Insert one upload."""
    con.execute("INSERT INTO jmap_blobs (blob_id, agent, type, size, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                [blob_id, agent, type_, len(data), created_at, data])


def upload(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str) -> Upload | None:
    """One of the agent's uploads, or None."""
    row = con.execute("SELECT data, type FROM jmap_blobs WHERE blob_id = ? AND agent = ?", [blob_id, agent]).fetchone()
    return Upload(bytes(row[0]), str(row[1])) if row else None


def delete_blobs_before(con: duckdb.DuckDBPyConnection, before: datetime) -> int:
    """Remove the uploads made before ``before``; how many were removed."""
    return len(con.execute("DELETE FROM jmap_blobs WHERE created_at < ? RETURNING 1", [before]).fetchall())


# -- submissions -----------------------------------------------------------------------------------


class SubmissionRow(msgspec.Struct, frozen=True, kw_only=True):
    """An EmailSubmission as ``jmap_submissions`` keeps it."""

    id: str
    identity_id: str
    email_id: str
    sent_email_id: str
    thread_id: str
    send_at: datetime
    envelope: str
    """JSON."""


def submissions(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str] | None) -> list[SubmissionRow]:
    """The agent's submissions (only ``ids`` when given), by sendAt and id."""
    where, args = "agent = ?", [agent]
    if ids is not None:
        where += " AND id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(ids)  # type: ignore[arg-type]
    rows = con.execute(f"SELECT id, identity_id, email_id, sent_email_id, thread_id, send_at, envelope FROM "
                       f"jmap_submissions WHERE {where} ORDER BY send_at, id", args).fetchall()
    return [SubmissionRow(id=r[0], identity_id=r[1], email_id=r[2], sent_email_id=r[3], thread_id=r[4],
                          send_at=r[5], envelope=r[6]) for r in rows]


def insert_submissions(con: duckdb.DuckDBPyConnection, agent: str, rows: Sequence[SubmissionRow]) -> None:
    """Insert submissions, one statement each."""
    for row in rows:
        con.execute("INSERT INTO jmap_submissions (id, agent, identity_id, email_id, sent_email_id, thread_id, "
                    "send_at, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [row.id, agent, row.identity_id, row.email_id, row.sent_email_id, row.thread_id, row.send_at,
                     row.envelope])


def delete_submissions(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> None:
    """Remove those of ``ids`` that are the agent's submissions."""
    con.execute("DELETE FROM jmap_submissions WHERE agent = ? AND id IN (SELECT unnest(?::VARCHAR[]))", [agent, ids])
