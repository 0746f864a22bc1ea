"""The sandbox's JMAP store: the email index, mailboxes, local mail and uploads over the appliance's DuckDB.

The store (``messages``) keeps what the gate let in and what agents sent;
the JMAP view of it is ``appliance.store.jmap``'s tables (their statements
live there, the states and the change log in ``appliance.store.changes``),
and this module is what the JMAP methods ask of them:

- ``jmap_emails``: one row per Email an agent can see, with what listings and
  filters need (mailboxIds, keywords, header properties, sort keys, preview,
  search text, the body structure as JSON). Filled by the indexer from
  ``messages`` (inbox and sent only: quarantined mail is not the agent's) and
  by Email/set and Email/import for mail written through JMAP (``jmap_local``
  holds its bytes). ``index_values`` computes a row; ``EmailTracker`` says
  what a write to it changed.
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
    "EmailTracker",
    "IndexEntry",
    "account_id",
    "blob_data",
    "delete_emails",
    "email_blob_id",
    "email_raw",
    "ensure_account",
    "fingerprint",
    "fingerprint_and_pending",
    "index_values",
    "insert_emails",
    "new_id",
    "raws",
    "save_blob",
    "snapshot",
    "summary_of",
    "time_runs",
    "unindexed",
    "vanished",
    "visible_count",
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
from appliance.store import audit, messages
from appliance.store import changes as change_log
from appliance.store import jmap as jmap_store
from appliance.store.database import Batch, utc
from appliance.store.jmap import EmailRow, IndexedEmail, Span, UnindexedMessage

T = TypeVar("T")

ROLES = (("inbox", "Inbox", 1), ("drafts", "Drafts", 2), ("sent", "Sent", 3), ("archive", "Archive", 4),
         ("trash", "Trash", 5))
"""(role, name, sortOrder) of the mailboxes every account has; each one's id is its role."""
STORE_MAILBOXES = {messages.INBOX: "inbox", messages.SENT: "sent"}
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
    jmap_store.insert_role_mailboxes(con, agent, ROLES)
    changes.log_changes(con, agent, [Change("Mailbox", role, "created") for role, _, _ in ROLES])


# -- emails ----------------------------------------------------------------------------------------


def summary_of(row: EmailRow) -> Summary:
    """An index row's header properties and body structure."""
    return _SUMMARY_DECODER.decode(row.summary_json)


def email_raw(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> bytes | None:
    """The bytes of one of the agent's emails (the stored copy, or the one written through JMAP)."""
    source = jmap_store.email_source(con, agent, email_id)
    if source is None:
        return None
    if source == "local":
        return jmap_store.local_raw(con, agent, email_id)
    return messages.message_raw(con, email_id, agent)


def raws(con: duckdb.DuckDBPyConnection, agent: str, rows: Sequence[EmailRow]) -> dict[str, bytes]:
    """The bytes of several of the agent's emails, by id.

    The store keeps messages in arrival order and the index row has the same receivedAt, so each
    run of close messages is read with its time range (as ``email_rows`` does) rather than by a
    scan of every stored message's bytes.
    """
    out: dict[str, bytes] = {}
    local_ids = [r.email_id for r in rows if r.source == "local"]
    if local_ids:
        out.update(jmap_store.local_raws(con, agent, local_ids))
    for group, low, high in time_runs([r for r in rows if r.source == "store"]):
        out.update(messages.raws_received_between(con, agent, group, low, high))
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


def _addresses(value: Any) -> list[Any]:
    from appliance.jmap.mime import Address

    out = []
    for a in value or []:
        out.append(a if isinstance(a, Address) else Address(name=a.get("name"), email=a.get("email", "")))
    return out


def index_values(entry: IndexEntry) -> IndexedEmail:
    """The ``jmap_emails`` row of an entry."""
    s, h = entry.summary, entry.summary.headers
    sent_at = None
    if h.get("sentAt"):
        try:
            sent_at = parse_utc(h["sentAt"])
        except ValueError:
            sent_at = None
    ids = h.get("messageId") or []
    subject = h.get("subject") or ""
    return IndexedEmail(
        email_id=entry.email_id, agent=entry.agent, source=entry.source, thread_id=entry.thread_id,
        mailbox_ids=entry.mailbox_ids, keywords=entry.keywords, received_at=entry.received_at, sent_at=sent_at,
        size=entry.size, message_id=f"<{ids[0]}>" if ids else None, subject=subject, subject_sort=subject_sort(subject),
        from_sort=address_sort(_addresses(h.get("from"))), to_sort=address_sort(_addresses(h.get("to"))),
        has_attachment=s.has_attachment, preview=s.preview, decision_id=entry.decision_id,
        summary=_JSON.encode(s).decode(), search_from=address_search(_addresses(h.get("from"))),
        search_to=address_search(_addresses(h.get("to"))), search_cc=address_search(_addresses(h.get("cc"))),
        search_bcc=address_search(_addresses(h.get("bcc"))), search_body=s.search_body, header_text=s.header_text)


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
        return {r.email_id: (r.thread_id, tuple(sorted(r.mailbox_ids)), tuple(sorted(r.keywords)))
                for r in jmap_store.email_states(self.con, self.agent, ids)}

    def _thread_mailboxes(self) -> set[str]:
        if not self._threads:
            return set()
        return jmap_store.thread_mailboxes(self.con, self.agent, sorted(self._threads))

    def before(self, ids: Iterable[str], threads: Iterable[str] = ()) -> None:
        wanted = [i for i in dict.fromkeys(ids) if i not in self._before]
        found = self._read(wanted) if wanted else {}
        for email_id in wanted:
            self._before[email_id] = found.get(email_id, ("", (), ()))
        new_threads = ({t for t, _, _ in found.values()} | set(threads)) - self._threads
        if new_threads:
            self._threads |= new_threads
            self._threads_before |= jmap_store.existing_threads(self.con, self.agent, sorted(new_threads))
            self._thread_mailboxes_before |= jmap_store.thread_mailboxes(self.con, self.agent, sorted(new_threads))

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
        threads_after = (jmap_store.existing_threads(self.con, self.agent, sorted(self._threads)) if self._threads
                         else set())
        for thread in sorted(membership_changed):
            if thread in threads_after and thread not in self._threads_before:
                log.append(Change("Thread", thread, "created"))
            elif thread in threads_after:
                log.append(Change("Thread", thread, "updated"))
            elif thread in self._threads_before:
                log.append(Change("Thread", thread, "destroyed"))
        if log or self.extra_mailboxes:
            touched = self._thread_mailboxes_before | self._thread_mailboxes() | self.extra_mailboxes
            live = jmap_store.existing_mailboxes(self.con, self.agent, sorted(touched)) if touched else set()
            log.extend(Change("Mailbox", m, "counts") for m in sorted(touched & live))
        log.extend(Change("EmailDelivery", e, "created") for e in self.delivered if e in after)
        return changes.log_changes(self.con, self.agent, log, now)


def insert_emails(batch: Batch, entries: Sequence[IndexEntry]) -> None:
    """Queue the entries' index rows in the writer's open batch."""
    jmap_store.insert_emails(batch, [index_values(entry) for entry in entries])


def delete_emails(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str]) -> None:
    """Remove emails from the index and their bytes (the store's copy through the store's own function)."""
    if not ids:
        return
    rows = jmap_store.email_sources(con, agent, ids)
    jmap_store.delete_index_rows(con, agent, ids)
    local = [r.email_id for r in rows if r.source == "local"]
    if local:
        jmap_store.delete_local(con, agent, local)
    for row in rows:
        if row.source == "store":
            messages.delete_message(con, row.email_id)


# -- indexing what the store holds ---------------------------------------------------------------


def fingerprint(con: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    """Cheap (row counts are metadata): moves whenever messages are stored or removed, or the quarantine
    decides one (release and delete are audited in ``events``). The indexer's fallback trigger."""
    return messages.message_count(con), audit.event_count(con)


def visible_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many stored messages agents see (every agent)."""
    return messages.count_in_mailboxes(con, list(STORE_MAILBOXES))


def fingerprint_and_pending(con: duckdb.DuckDBPyConnection) -> tuple[tuple[Any, ...], bool]:
    """``fingerprint`` and whether anything waits in ``jmap_pending``."""
    return fingerprint(con), change_log.any_pending(con)


def unindexed(con: duckdb.DuckDBPyConnection, agents: Sequence[str],
              ids: Sequence[str] | None = None) -> list[UnindexedMessage]:
    """Visible stored messages of ``agents`` the index lacks (only among ``ids`` when given)."""
    return jmap_store.unindexed_messages(con, agents, list(STORE_MAILBOXES), ids)


def vanished(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(agent, email_id) of indexed store emails the store no longer shows an agent."""
    return jmap_store.vanished_emails(con, list(STORE_MAILBOXES))


# -- blobs -----------------------------------------------------------------------------------------


def save_blob(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str, type_: str, data: bytes) -> None:
    """Keep an upload, made now."""
    jmap_store.save_blob(con, agent, blob_id, type_, data, utc())


def blob_data(con: duckdb.DuckDBPyConnection, agent: str, blob_id: str) -> tuple[bytes, str] | None:
    """The bytes and media type of one of the agent's blobs: an upload, an Email, or one part of one."""
    from appliance.jmap.mime import decoded_part

    if blob_id.startswith("U"):
        found = jmap_store.upload(con, agent, blob_id)
        return (found.data, found.type) if found else None
    if not blob_id.startswith("B"):
        return None
    email_id, _, part_id = blob_id[1:].partition("_")
    raw = email_raw(con, agent, email_id)
    if raw is None:
        return None
    if not part_id:
        return raw, "message/rfc822"
    rows = jmap_store.email_rows(con, agent, [email_id])
    part = summary_of(rows[email_id]).part(part_id) if email_id in rows else None
    if part is None:
        return None
    return decoded_part(raw, part)[0], part.type


def email_blob_id(email_id: str, part_id: str | None = None) -> str:
    return f"B{email_id}" if part_id is None else f"B{email_id}_{part_id}"
