"""The sandbox's JMAP store: the email index, mailboxes, local mail and uploads over the appliance's DuckDB.

The store (``messages``) keeps what the gate let in and what agents sent;
this module keeps the JMAP view of it and nothing else writes its tables:

- ``jmap_emails``: one row per Email an agent can see, with what listings and
  filters need (mailboxIds, keywords, header properties, sort keys, preview,
  search text, the body structure as JSON). Filled by the indexer from
  ``messages`` (inbox and sent only: quarantined mail is not the agent's) and
  by Email/set and Email/import for mail written through JMAP (``jmap_local``
  holds its bytes).
- ``jmap_mailboxes``: the five role mailboxes of every account and the ones
  agents make.
- ``jmap_blobs``: uploads (RFC 8620 6.1).

Every write here records its changes (``changes.log_changes``) in the same
transaction, so a state always describes exactly what a read in the same
snapshot sees. Reads run inside one transaction (``snapshot``).
"""

from __future__ import annotations

__all__ = [
    "ROLES",
    "STORE_MAILBOXES",
    "EmailRow",
    "EmailTracker",
    "IndexEntry",
    "MailboxRow",
    "account_id",
    "blob_data",
    "email_raw",
    "email_rows",
    "ensure_account",
    "mailbox_counts",
    "mailboxes",
    "snapshot",
]

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import msgspec

from appliance.jmap import changes
from appliance.jmap.changes import Change
from appliance.jmap.mime import Summary, address_search, address_sort, parse_utc, subject_sort
from appliance.store.database import Batch, utc

T = TypeVar("T")

ROLES = (("inbox", "Inbox", 1), ("drafts", "Drafts", 2), ("sent", "Sent", 3), ("archive", "Archive", 4),
         ("trash", "Trash", 5))
"""(role, name, sortOrder) of the mailboxes every account has; each one's id is its role."""
STORE_MAILBOXES = {"inbox": "inbox", "sent": "sent"}
"""The store's mailboxes an agent sees, and the JMAP mailbox each one's messages start in."""

_SUMMARY_DECODER = msgspec.json.Decoder(Summary)
_JSON = msgspec.json.Encoder()


def account_id(agent: str) -> str:
    """The JMAP account id of an agent: stable, and an RFC 8620 Id (no ``@`` or ``.``)."""
    return "A" + hashlib.sha256(agent.lower().encode()).hexdigest()[:20]


def snapshot(con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run ``work`` in one read transaction: every statement sees the same committed state."""
    con.execute("BEGIN TRANSACTION")
    try:
        return work(con)
    finally:
        con.execute("ROLLBACK")


def new_id(prefix: str) -> str:
    return f"{prefix}{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


# -- accounts and mailboxes ------------------------------------------------------------------------


def ensure_account(con: duckdb.DuckDBPyConnection, agent: str) -> None:
    """The account's states and role mailboxes, created (and logged) the first time."""
    if not changes.ensure_account(con, agent):
        return
    con.execute("INSERT INTO jmap_mailboxes (agent, id, name, parent_id, role, sort_order, is_subscribed) "
                "SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), NULL, unnest(?::VARCHAR[]), "
                "unnest(?::BIGINT[]), true",
                [agent, [r for r, _, _ in ROLES], [n for _, n, _ in ROLES], [r for r, _, _ in ROLES],
                 [o for _, _, o in ROLES]])
    changes.log_changes(con, agent, [Change("Mailbox", role, "created") for role, _, _ in ROLES])


class MailboxRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    parent_id: str | None
    role: str | None
    sort_order: int
    is_subscribed: bool


_MAILBOX_COLUMNS = "id, name, parent_id, role, sort_order, is_subscribed"


def mailboxes(con: duckdb.DuckDBPyConnection, agent: str, ids: Sequence[str] | None = None) -> list[MailboxRow]:
    where, args = "agent = ?", [agent]
    if ids is not None:
        where += " AND id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(list(ids))  # type: ignore[arg-type]
    rows = con.execute(f"SELECT {_MAILBOX_COLUMNS} FROM jmap_mailboxes WHERE {where} ORDER BY sort_order, name, id",
                       args).fetchall()
    return [MailboxRow(id=r[0], name=r[1], parent_id=r[2], role=r[3], sort_order=int(r[4]), is_subscribed=r[5])
            for r in rows]


def insert_mailbox(con: duckdb.DuckDBPyConnection, agent: str, row: MailboxRow) -> None:
    con.execute("INSERT INTO jmap_mailboxes (agent, id, name, parent_id, role, sort_order, is_subscribed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [agent, row.id, row.name, row.parent_id, row.role, row.sort_order, row.is_subscribed])


def update_mailbox(con: duckdb.DuckDBPyConnection, agent: str, row: MailboxRow) -> None:
    con.execute("UPDATE jmap_mailboxes SET name = ?, parent_id = ?, role = ?, sort_order = ?, is_subscribed = ? "
                "WHERE agent = ? AND id = ?",
                [row.name, row.parent_id, row.role, row.sort_order, row.is_subscribed, agent, row.id])


def delete_mailbox(con: duckdb.DuckDBPyConnection, agent: str, mailbox_id: str) -> None:
    con.execute("DELETE FROM jmap_mailboxes WHERE agent = ? AND id = ?", [agent, mailbox_id])


def mailbox_counts(con: duckdb.DuckDBPyConnection, agent: str) -> dict[str, tuple[int, int, int, int]]:
    """mailbox id -> (totalEmails, unreadEmails, totalThreads, unreadThreads), RFC 8621 2's rules.

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
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


# -- emails ----------------------------------------------------------------------------------------


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

    @property
    def summary(self) -> Summary:
        return _SUMMARY_DECODER.decode(self.summary_json)


_ROW = ("email_id, source, thread_id, mailbox_ids, keywords, received_at, size, has_attachment, preview, "
        "decision_id, summary")


def _email_row(r: tuple[Any, ...]) -> EmailRow:
    return EmailRow(email_id=r[0], source=r[1], thread_id=r[2], mailbox_ids=tuple(r[3]), keywords=tuple(r[4]),
                    received_at=r[5], size=int(r[6]), has_attachment=bool(r[7]), preview=r[8], decision_id=r[9],
                    summary_json=r[10])


MAX_SPANS = 8
"""Beyond this many separate runs, one scan of the table is cheaper than a query per run."""
Span = tuple[list[str], datetime, datetime]
"""Some email ids and the receivedAt range they lie in (``cache.AccountIndex.spans``)."""


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


def email_count(con: duckdb.DuckDBPyConnection, agent: str) -> int:
    row = con.execute("SELECT count(*) FROM jmap_emails WHERE agent = ?", [agent]).fetchone()
    return int(row[0]) if row else 0


def existing_emails(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    return {r[0] for r in con.execute("SELECT email_id FROM jmap_emails WHERE email_id IN "
                                      "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()}


def existing_threads(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    return {r[0] for r in con.execute("SELECT DISTINCT thread_id FROM jmap_emails WHERE thread_id IN "
                                      "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent]).fetchall()}


def existing_mailboxes(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> set[str]:
    return {r[0] for r in con.execute("SELECT id FROM jmap_mailboxes WHERE id IN (SELECT unnest(?::VARCHAR[])) "
                                      "AND agent = ?", [ids, agent]).fetchall()}


def threads(con: duckdb.DuckDBPyConnection, agent: str, ids: Sequence[str] | None) -> dict[str, list[str]]:
    """thread id -> its email ids, oldest first (RFC 8621 3: sorted by receivedAt)."""
    where, args = "agent = ?", [agent]
    if ids is not None:
        where = "thread_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?"
        args = [list(ids), agent]  # type: ignore[list-item]
    rows = con.execute(f"SELECT thread_id, list(email_id ORDER BY received_at, email_id) FROM jmap_emails "
                       f"WHERE {where} GROUP BY thread_id", args).fetchall()
    return {str(t): list(e) for t, e in rows}


def email_raw(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> bytes | None:
    """The bytes of one of the agent's emails (the stored copy, or the one written through JMAP)."""
    row = con.execute("SELECT source FROM jmap_emails WHERE email_id = ? AND agent = ?", [email_id, agent]).fetchone()
    if row is None:
        return None
    if row[0] == "local":
        found = con.execute("SELECT raw FROM jmap_local WHERE email_id = ? AND agent = ?",
                            [email_id, agent]).fetchone()
    else:
        found = con.execute("SELECT raw FROM messages WHERE email_id = ? AND agent = ?", [email_id, agent]).fetchone()
    return bytes(found[0]) if found else None


def raws(con: duckdb.DuckDBPyConnection, agent: str, rows: Sequence[EmailRow]) -> dict[str, bytes]:
    """The bytes of several of the agent's emails, by id.

    The store keeps messages in arrival order and the index row has the same receivedAt, so each
    run of close messages is read with its time range (as ``email_rows`` does) rather than by a
    scan of every stored message's bytes.
    """
    out: dict[str, bytes] = {}
    local_ids = [r.email_id for r in rows if r.source == "local"]
    if local_ids:
        found = con.execute("SELECT email_id, raw FROM jmap_local WHERE email_id IN (SELECT unnest(?::VARCHAR[])) "
                            "AND agent = ?", [local_ids, agent]).fetchall()
        out.update({str(i): bytes(r) for i, r in found})
    for group, low, high in time_runs([r for r in rows if r.source == "store"]):
        found = con.execute("SELECT email_id, raw FROM messages WHERE received_at BETWEEN ? AND ? AND email_id IN "
                            "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [low, high, group, agent]).fetchall()
        out.update({str(i): bytes(r) for i, r in found})
    return out


def time_runs(rows: Sequence[EmailRow], gap: float = 600.0) -> list[Span]:
    """Rows grouped into runs of receivedAt with no gap over ``gap`` seconds, each with its range."""
    ordered = sorted(rows, key=lambda r: r.received_at)
    runs: list[Span] = []
    for row in ordered:
        if runs and (row.received_at - runs[-1][2]).total_seconds() <= gap:
            runs[-1][0].append(row.email_id)
            runs[-1] = (runs[-1][0], runs[-1][1], row.received_at)
        else:
            runs.append(([row.email_id], row.received_at, row.received_at))
    return runs


def thread_of_references(con: duckdb.DuckDBPyConnection, agent: str, message_ids: list[str]) -> str | None:
    """The thread of the agent's newest email whose Message-ID is one of ``message_ids`` (mail written here)."""
    if not message_ids:
        return None
    row = con.execute("SELECT thread_id FROM jmap_emails WHERE agent = ? AND message_id IN "
                      "(SELECT unnest(?::VARCHAR[])) ORDER BY received_at DESC LIMIT 1",
                      [agent, message_ids]).fetchone()
    return str(row[0]) if row else None


class IndexEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An Email about to enter the index: where it is, and what ``mime.summarize`` read of it."""

    email_id: str
    agent: str
    source: str
    thread_id: str
    mailbox_ids: list[str]
    keywords: list[str]
    received_at: datetime
    size: int
    decision_id: str | None
    summary: Summary


EMAIL_COLUMNS = ("email_id", "agent", "source", "thread_id", "mailbox_ids", "keywords", "received_at", "sent_at",
                 "size", "message_id", "subject", "subject_sort", "from_sort", "to_sort", "has_attachment",
                 "preview", "decision_id", "summary", "search_from", "search_to", "search_cc", "search_bcc",
                 "search_body", "header_text")


def _addresses(value: Any) -> list[Any]:
    from appliance.jmap.mime import Address

    out = []
    for a in value or []:
        out.append(a if isinstance(a, Address) else Address(name=a.get("name"), email=a.get("email", "")))
    return out


def index_values(entry: IndexEntry) -> tuple[object, ...]:
    """The ``jmap_emails`` row of an entry, in ``EMAIL_COLUMNS`` order."""
    s, h = entry.summary, entry.summary.headers
    sent_at = None
    if h.get("sentAt"):
        try:
            sent_at = parse_utc(h["sentAt"])
        except ValueError:
            sent_at = None
    ids = h.get("messageId") or []
    subject = h.get("subject") or ""
    return (entry.email_id, entry.agent, entry.source, entry.thread_id, entry.mailbox_ids, entry.keywords,
            entry.received_at, sent_at, entry.size, f"<{ids[0]}>" if ids else None, subject, subject_sort(subject),
            address_sort(_addresses(h.get("from"))), address_sort(_addresses(h.get("to"))), s.has_attachment,
            s.preview, entry.decision_id, _JSON.encode(s).decode(),
            address_search(_addresses(h.get("from"))), address_search(_addresses(h.get("to"))),
            address_search(_addresses(h.get("cc"))), address_search(_addresses(h.get("bcc"))),
            s.search_body, s.header_text)


# -- the tracker: what a change to some emails changes -----------------------------------------------


class EmailTracker:
    """Records the Email, Thread and Mailbox changes of a write to ``jmap_emails``.

    ``before(ids)`` reads the emails' mailboxes, keywords and threads (and which threads exist and
    which mailboxes hold mail of those threads) before the write; ``finish()`` reads them again
    after it and logs: Email created/updated/destroyed, Thread created/updated/destroyed when its
    emails changed, and Mailbox ``counts`` for every mailbox whose counts may have moved (any that
    holds mail of a thread touched: unreadThreads depends on the whole thread).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, agent: str) -> None:
        self.con = con
        self.agent = agent
        self._before: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
        self._threads: set[str] = set()
        self._thread_mailboxes_before: set[str] = set()
        self._threads_before: set[str] = set()
        self.extra_mailboxes: set[str] = set()
        self.delivered: list[str] = []
        """Emails that arrived from outside (EmailDelivery, RFC 8621 1.5)."""

    def _read(self, ids: list[str]) -> dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]:
        rows = self.con.execute("SELECT email_id, thread_id, mailbox_ids, keywords FROM jmap_emails WHERE email_id IN "
                                "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, self.agent]).fetchall()
        return {str(r[0]): (str(r[1]), tuple(sorted(r[2])), tuple(sorted(r[3]))) for r in rows}

    def _thread_mailboxes(self) -> set[str]:
        if not self._threads:
            return set()
        rows = self.con.execute("SELECT DISTINCT unnest(mailbox_ids) FROM jmap_emails WHERE thread_id IN "
                                "(SELECT unnest(?::VARCHAR[])) AND agent = ?",
                                [sorted(self._threads), self.agent]).fetchall()
        return {str(r[0]) for r in rows}

    def before(self, ids: Iterable[str], threads: Iterable[str] = ()) -> None:
        wanted = [i for i in dict.fromkeys(ids) if i not in self._before]
        found = self._read(wanted) if wanted else {}
        for email_id in wanted:
            self._before[email_id] = found.get(email_id, ("", (), ()))
        new_threads = ({t for t, _, _ in found.values()} | set(threads)) - self._threads
        if new_threads:
            self._threads |= new_threads
            self._threads_before |= existing_threads(self.con, self.agent, sorted(new_threads))
            rows = self.con.execute("SELECT DISTINCT unnest(mailbox_ids) FROM jmap_emails WHERE thread_id IN "
                                    "(SELECT unnest(?::VARCHAR[])) AND agent = ?",
                                    [sorted(new_threads), self.agent]).fetchall()
            self._thread_mailboxes_before |= {str(r[0]) for r in rows}

    def finish(self, now: datetime | None = None) -> dict[str, int]:
        after = self._read(list(self._before))
        log: list[Change] = []
        for email_id, (thread, mailboxes_, keywords) in self._before.items():
            now_row = after.get(email_id)
            if not thread and now_row is not None:
                log.append(Change("Email", email_id, "created", now_row[0]))
                self._threads.add(now_row[0])
            elif thread and now_row is None:
                log.append(Change("Email", email_id, "destroyed", thread))
            elif now_row is not None and (now_row[1], now_row[2]) != (mailboxes_, keywords):
                log.append(Change("Email", email_id, "updated", thread))
        membership_changed = {c.thread_id for c in log if c.kind != "updated" and c.thread_id}
        threads_after = existing_threads(self.con, self.agent, sorted(self._threads)) if self._threads else set()
        for thread in sorted(membership_changed):
            if thread in threads_after and thread not in self._threads_before:
                log.append(Change("Thread", thread, "created"))
            elif thread in threads_after:
                log.append(Change("Thread", thread, "updated"))
            elif thread in self._threads_before:
                log.append(Change("Thread", thread, "destroyed"))
        if log or self.extra_mailboxes:
            touched = self._thread_mailboxes_before | self._thread_mailboxes() | self.extra_mailboxes
            live = existing_mailboxes(self.con, self.agent, sorted(touched)) if touched else set()
            log.extend(Change("Mailbox", m, "counts") for m in sorted(touched & live))
        log.extend(Change("EmailDelivery", e, "created") for e in self.delivered if e in after)
        return changes.log_changes(self.con, self.agent, log, now)


def insert_emails(batch: Batch, entries: Sequence[IndexEntry]) -> None:
    for entry in entries:
        batch.insert("jmap_emails", EMAIL_COLUMNS, index_values(entry))


def set_email_state(con: duckdb.DuckDBPyConnection, agent: str,
                    updates: dict[str, tuple[list[str], list[str]]]) -> None:
    """New mailboxIds and keywords for some of the agent's emails: id -> (mailbox_ids, keywords)."""
    if not updates:
        return
    ids = list(updates)
    con.execute("UPDATE jmap_emails SET mailbox_ids = u.m, keywords = u.k FROM (SELECT unnest(?::VARCHAR[]) AS i, "
                "unnest(?::VARCHAR[][]) AS m, unnest(?::VARCHAR[][]) AS k) AS u "
                "WHERE jmap_emails.email_id = u.i AND jmap_emails.agent = ?",
                [ids, [updates[i][0] for i in ids], [updates[i][1] for i in ids], agent])


def delete_emails(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> None:
    """Remove emails from the index and their bytes (the store's copy through the store's own function)."""
    from appliance.store.messages import delete_message

    if not ids:
        return
    rows = con.execute("SELECT email_id, source FROM jmap_emails WHERE email_id IN (SELECT unnest(?::VARCHAR[])) "
                       "AND agent = ?", [ids, agent]).fetchall()
    con.execute("DELETE FROM jmap_emails WHERE email_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?", [ids, agent])
    local = [str(i) for i, s in rows if s == "local"]
    if local:
        con.execute("DELETE FROM jmap_local WHERE email_id IN (SELECT unnest(?::VARCHAR[])) AND agent = ?",
                    [local, agent])
    for email_id, source in rows:
        if source == "store":
            delete_message(con, str(email_id))


def save_local(batch: Batch, agent: str, email_id: str, raw: bytes) -> None:
    batch.insert("jmap_local", ("email_id", "agent", "raw"), (email_id, agent, raw))


# -- indexing what the store holds ---------------------------------------------------------------


class StoredRef(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message the index should hold, without its bytes."""

    email_id: str
    agent: str
    mailbox: str
    thread_id: str
    received_at: datetime
    size: int
    keywords: list[str]
    decision_id: str


_FINGERPRINT = "(SELECT count(*) FROM messages), (SELECT count(*) FROM events)"


def fingerprint(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """Cheap (row counts are metadata): moves whenever messages are stored or removed, or the quarantine
    decides one (release and delete are audited in ``events``). The indexer's fallback trigger."""
    row = con.execute(f"SELECT {_FINGERPRINT}").fetchone()
    return tuple(row) if row else ()


def visible_count(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM messages WHERE mailbox IN ('inbox', 'sent')").fetchone()
    return int(row[0]) if row else 0


def indexed_store_count(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM jmap_emails WHERE source = 'store'").fetchone()
    return int(row[0]) if row else 0


def fingerprint_and_pending(con: duckdb.DuckDBPyConnection) -> tuple[tuple[Any, ...], bool]:
    """``fingerprint`` and whether anything waits in ``jmap_pending``, in one statement."""
    row = con.execute(f"SELECT {_FINGERPRINT}, EXISTS (SELECT 1 FROM jmap_pending)").fetchone()
    assert row is not None
    return tuple(row[:2]), bool(row[2])


def pending(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return [(str(a), str(i)) for a, i in con.execute("SELECT agent, id FROM jmap_pending").fetchall()]


def unindexed(con: duckdb.DuckDBPyConnection, agents: Sequence[str], ids: Sequence[str] | None = None,
              limit: int = 1_000_000) -> list[StoredRef]:
    """Visible stored messages of ``agents`` the index lacks (only among ``ids`` when given)."""
    where = "m.agent IN (SELECT unnest(?::VARCHAR[])) AND m.mailbox IN ('inbox', 'sent')"
    args: list[Any] = [list(agents)]
    if ids is not None:
        where += " AND m.email_id IN (SELECT unnest(?::VARCHAR[]))"
        args.append(list(ids))
    rows = con.execute(
        f"SELECT m.email_id, m.agent, m.mailbox, m.thread_id, m.received_at, m.size, m.keywords, m.decision_id "
        f"FROM messages m WHERE {where} AND NOT EXISTS (SELECT 1 FROM jmap_emails j WHERE j.email_id = m.email_id) "
        f"ORDER BY m.received_at LIMIT ?", [*args, limit]).fetchall()
    return [StoredRef(email_id=r[0], agent=r[1], mailbox=r[2], thread_id=r[3], received_at=r[4], size=int(r[5]),
                      keywords=list(r[6] or []), decision_id=r[7]) for r in rows]


def vanished(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(agent, email_id) of indexed store emails the store no longer shows an agent."""
    rows = con.execute("SELECT j.agent, j.email_id FROM jmap_emails j WHERE j.source = 'store' AND NOT EXISTS "
                       "(SELECT 1 FROM messages m WHERE m.email_id = j.email_id AND m.mailbox IN ('inbox', 'sent'))"
                       ).fetchall()
    return [(str(a), str(i)) for a, i in rows]


def stored_raws(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> dict[str, bytes]:
    rows = con.execute("SELECT email_id, raw FROM messages WHERE email_id IN (SELECT unnest(?::VARCHAR[]))",
                       [list(ids)]).fetchall()
    return {str(i): bytes(r) for i, r in rows}


def clear_pending(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> None:
    if ids:
        con.execute("DELETE FROM jmap_pending WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])


# -- blobs -----------------------------------------------------------------------------------------


def save_blob(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str, type_: str, data: bytes) -> None:
    con.execute("INSERT INTO jmap_blobs (blob_id, agent, type, size, created_at, data) VALUES (?, ?, ?, ?, ?, ?)",
                [blob_id, agent, type_, len(data), utc(), data])


def blob_data(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str) -> tuple[bytes, str] | None:
    """The bytes and media type of one of the agent's blobs: an upload, an Email, or one part of one."""
    from appliance.jmap.mime import decoded_part

    if blob_id.startswith("U"):
        row = con.execute("SELECT data, type FROM jmap_blobs WHERE blob_id = ? AND agent = ?",
                          [blob_id, agent]).fetchone()
        return (bytes(row[0]), str(row[1])) if row else None
    if not blob_id.startswith("B"):
        return None
    email_id, _, part_id = blob_id[1:].partition("_")
    raw = email_raw(con, agent, email_id)
    if raw is None:
        return None
    if not part_id:
        return raw, "message/rfc822"
    rows = email_rows(con, agent, [email_id])
    part = rows[email_id].summary.part(part_id) if email_id in rows else None
    if part is None:
        return None
    return decoded_part(raw, part)[0], part.type


def email_blob_id(email_id: str, part_id: str | None = None) -> str:
    return f"B{email_id}" if part_id is None else f"B{email_id}_{part_id}"


def delete_old_blobs(con: duckdb.DuckDBPyConnection, before: datetime) -> int:
    return len(con.execute("DELETE FROM jmap_blobs WHERE created_at < ? RETURNING 1", [before]).fetchall())
