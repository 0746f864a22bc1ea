"""The local mail store (sandbox mode): accepted messages with their index.

Raw bytes live in the same DuckDB file as the audit log, so a message and its
decision commit together. Mailboxes: ``inbox`` (dispatched to the agent) and
``quarantine`` (held until an operator releases or deletes it).

Threads are per counterpart: a message joins a stored thread only through a
message exchanged with its own sender (``_exchanged_with``), so naming
someone else's Message-ID or subject does not reach into their thread (or
spend its token budget).
"""

from __future__ import annotations

__all__ = [
    "INBOX",
    "QUARANTINE",
    "SCHEMA",
    "SENT",
    "AdmittedMessage",
    "MessageSender",
    "MessageSummary",
    "MessageThread",
    "StoredMessage",
    "admitted_after",
    "count_in_mailboxes",
    "delete_message",
    "get_message",
    "latest_with_message_id",
    "list_messages",
    "mailbox_email_ids",
    "may_join_thread",
    "message_agent",
    "message_count",
    "message_of_decision",
    "message_raw",
    "message_received_at",
    "move_message",
    "newest_sender",
    "raws_by_id",
    "raws_received_between",
    "resolve_thread",
    "save_message",
    "subject_key",
    "thread_of_message",
]

import hashlib
import re
from datetime import datetime, timedelta

import duckdb
import msgspec

from appliance.mail import ParsedMessage, normalize_address, thread_root
from appliance.store.database import Batch
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("messages",),
    ddl=(
        # store: accepted messages, raw bytes included (appliance.store.messages)
        """CREATE TABLE IF NOT EXISTS messages (
        email_id VARCHAR PRIMARY KEY,
        agent VARCHAR NOT NULL,
        mailbox VARCHAR NOT NULL,
        thread_id VARCHAR NOT NULL,
        message_id VARCHAR,
        subject VARCHAR,
        subject_key VARCHAR,
        sender VARCHAR,
        received_at TIMESTAMP NOT NULL,
        decision_id VARCHAR NOT NULL,
        keywords VARCHAR[],
        size BIGINT NOT NULL,
        raw BLOB NOT NULL
    )""",
        "CREATE INDEX IF NOT EXISTS messages_by_message_id ON messages (message_id)",
    ),
)

INBOX = "inbox"
QUARANTINE = "quarantine"
SENT = "sent"
"""The mailbox of the agents' own messages (the Sent copy of each send)."""

_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|vs|antw|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_SUBJECT_THREAD_WINDOW = timedelta(days=30)


class MessageSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message without its bytes, for listings."""

    email_id: str
    agent: str
    mailbox: str
    thread_id: str
    message_id: str | None
    subject: str
    sender: str
    received_at: datetime
    decision_id: str
    size: int


class StoredMessage(MessageSummary, frozen=True, kw_only=True):
    """A message as kept in the store, bytes included."""

    keywords: list[str]
    raw: bytes


def subject_key(subject: str) -> str:
    """The subject with reply/forward prefixes and extra spaces removed, lowercased."""
    return " ".join(_REPLY_PREFIX.sub("", subject).split()).lower()


def may_join_thread(parsed: ParsedMessage) -> bool:
    """Whether the message could continue a stored thread (else it starts its own: no lookup)."""
    return bool(parsed.references or parsed.in_reply_to or _REPLY_PREFIX.match(parsed.subject))


def _exchanged_with(address: str) -> tuple[str, list[object]]:
    """The SQL condition, and its parameters, for "this stored message was exchanged with ``address``".

    This is the one rule for joining a thread: a new message from ``address``
    continues a stored thread only through a message exchanged with that same
    counterpart. Otherwise anyone who learns a Message-ID (a forward, a CC, a
    quoted header) or a subject could join the thread and spend its budget.

    - A message received (``inbox``, ``quarantine``): its counterpart is its
      sender, the RFC 5322 From address the gate matched.
    - A message the agent sent (the ``sent`` mailbox to come): its counterparts
      will be its recipients. That mailbox needs them stored (a recipients
      column) and a branch here, e.g. ``OR (mailbox = 'sent' AND
      list_contains(recipients, ?))``.
    - Any other mailbox is exchanged with nobody: nothing joins through it.

    Addresses are compared whole and case-insensitively; the same domain is not
    enough (a colleague's reply to a message from boss@acme.com starts its own
    thread).
    """
    return "(mailbox IN (?, ?) AND lower(sender) = ?)", [INBOX, QUARANTINE, normalize_address(address)]


def _own_thread(parsed: ParsedMessage) -> str:
    """The id of the thread a message starts when it joins none: its header root, scoped to its sender.

    Scoped so that a message naming another sender's Message-ID (known or not
    yet stored) cannot land in the thread that Message-ID roots; a sender's
    replies that name the same root still meet in one thread.
    """
    key = f"{thread_root(parsed)}\n{normalize_address(parsed.sender.address)}"
    return "T" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


def resolve_thread(con: duckdb.DuckDBPyConnection, agent: str, parsed: ParsedMessage, now: datetime) -> str:
    """The thread a new message joins: by References/In-Reply-To, then by normalized subject.

    Either way only through a stored message exchanged with the new message's
    sender (``_exchanged_with``). Subject threading applies only to replies (a
    ``Re:``-style prefix) and to messages of the last 30 days, so unrelated
    mail with a common subject ("Hello") does not merge into one thread. A
    message that joins nothing starts its own thread (``_own_thread``).
    """
    exchanged, counterpart = _exchanged_with(parsed.sender.address)
    refs = [*parsed.references, *([parsed.in_reply_to] if parsed.in_reply_to else [])]
    if refs:
        found = con.execute(
            f"SELECT thread_id FROM messages WHERE agent = ? AND message_id IN ({', '.join('?' for _ in refs)}) "
            f"AND {exchanged} ORDER BY received_at DESC LIMIT 1", [agent, *refs, *counterpart]).fetchone()
        if found:
            return str(found[0])
    if _REPLY_PREFIX.match(parsed.subject):
        found = con.execute(
            f"SELECT thread_id FROM messages WHERE agent = ? AND subject_key = ? AND received_at >= ? AND {exchanged} "
            "ORDER BY received_at DESC LIMIT 1",
            [agent, subject_key(parsed.subject), now - _SUBJECT_THREAD_WINDOW, *counterpart]).fetchone()
        if found:
            return str(found[0])
    return _own_thread(parsed)


_MESSAGE_COLUMNS = ("email_id", "agent", "mailbox", "thread_id", "message_id", "subject", "subject_key", "sender",
                    "received_at", "decision_id", "keywords", "size", "raw")


def save_message(batch: Batch, msg: StoredMessage) -> None:
    """Insert ``msg`` in the writer's open batch."""
    batch.insert("messages", _MESSAGE_COLUMNS, (
        msg.email_id, msg.agent, msg.mailbox, msg.thread_id, msg.message_id, msg.subject, subject_key(msg.subject),
        msg.sender, msg.received_at, msg.decision_id, msg.keywords, msg.size, msg.raw))


_SUMMARY = "email_id, agent, mailbox, thread_id, message_id, subject, sender, received_at, decision_id, size"


def list_messages(con: duckdb.DuckDBPyConnection, *, mailbox: str | None = None, agent: str | None = None,
                  limit: int = 100) -> list[MessageSummary]:
    """Newest first, filtered by mailbox and agent."""
    where, args = [], []
    if mailbox is not None:
        where.append("mailbox = ?")
        args.append(mailbox)
    if agent is not None:
        where.append("agent = ?")
        args.append(agent.lower())
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = con.execute(f"SELECT {_SUMMARY} FROM messages {clause} ORDER BY received_at DESC LIMIT ?",
                       [*args, limit]).fetchall()
    return [MessageSummary(**dict(zip(_SUMMARY.split(", "), row, strict=True))) for row in rows]


def get_message(con: duckdb.DuckDBPyConnection, email_id: str) -> StoredMessage | None:
    """The stored message, bytes included, or None."""
    cols = _SUMMARY + ", keywords, raw"
    row = con.execute(f"SELECT {cols} FROM messages WHERE email_id = ?", [email_id]).fetchone()
    if row is None:
        return None
    return StoredMessage(**dict(zip(cols.split(", "), row, strict=True)))


def message_agent(con: duckdb.DuckDBPyConnection, email_id: str, *, mailbox: str | None = None) -> str | None:
    """The agent a stored message belongs to (only when it is in ``mailbox``, when given), or None."""
    query = "SELECT agent FROM messages WHERE email_id = ?" + (" AND mailbox = ?" if mailbox else "")
    row = con.execute(query, [email_id, *([mailbox] if mailbox else [])]).fetchone()
    return str(row[0]) if row else None


def move_message(con: duckdb.DuckDBPyConnection, email_id: str, *, from_mailbox: str, to_mailbox: str) -> bool:
    """Move a message between mailboxes; False when it is not in ``from_mailbox``."""
    found = con.execute("SELECT 1 FROM messages WHERE email_id = ? AND mailbox = ?",
                        [email_id, from_mailbox]).fetchone()
    if found is None:
        return False
    con.execute("UPDATE messages SET mailbox = ? WHERE email_id = ?", [to_mailbox, email_id])
    return True


def delete_message(con: duckdb.DuckDBPyConnection, email_id: str, *, mailbox: str | None = None) -> bool:
    """Delete a message (only from ``mailbox`` when given); False when there was none."""
    query = "DELETE FROM messages WHERE email_id = ?" + (" AND mailbox = ?" if mailbox else "") + " RETURNING email_id"
    return bool(con.execute(query, [email_id, *([mailbox] if mailbox else [])]).fetchall())


class AdmittedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message the gate let in (inbox or quarantine), with the decision that stored it."""

    email_id: str
    decision_id: str
    agent: str
    received_at: datetime


def admitted_after(con: duckdb.DuckDBPyConnection, since: dict[str, datetime], *,
                   after: AdmittedMessage | None = None, limit: int = 16384) -> list[AdmittedMessage]:
    """A page of inbox and quarantine messages received after their agent's time in ``since`` (any time for an
    agent not in it), oldest first (then by email_id), from the one after ``after``."""
    page = "" if after is None else "AND (m.received_at > ? OR (m.received_at = ? AND m.email_id > ?)) "
    rows = con.execute(
        "SELECT m.email_id, m.decision_id, m.agent, m.received_at FROM messages m "
        "LEFT JOIN (SELECT unnest(?::VARCHAR[]) AS agent, unnest(?::TIMESTAMP[]) AS since) s ON s.agent = m.agent "
        "WHERE m.mailbox IN ('inbox', 'quarantine') AND m.received_at > coalesce(s.since, TIMESTAMP '-infinity') "
        + page + "ORDER BY m.received_at, m.email_id LIMIT ?",
        [list(since), list(since.values()),
         *([] if after is None else [after.received_at, after.received_at, after.email_id]), limit]).fetchall()
    return [AdmittedMessage(email_id=e, decision_id=d, agent=a, received_at=r) for e, d, a, r in rows]


class MessageThread(msgspec.Struct, frozen=True, kw_only=True):
    """The thread and Message-ID of a stored message."""

    thread_id: str
    message_id: str | None


def thread_of_message(con: duckdb.DuckDBPyConnection, email_id: str) -> MessageThread | None:
    """The thread id and Message-ID of the stored message ``email_id``, or None."""
    row = con.execute("SELECT thread_id, message_id FROM messages WHERE email_id = ?", [email_id]).fetchone()
    return MessageThread(thread_id=str(row[0]), message_id=row[1]) if row else None


def latest_with_message_id(con: duckdb.DuckDBPyConnection, mailbox: str, message_id: str, *,
                           agent: str | None = None) -> str | None:
    """The email id of the newest message in ``mailbox`` with ``message_id`` (``agent``'s, when given), or None."""
    scope, params = ("AND agent = ?", [agent]) if agent else ("", [])
    row = con.execute(f"SELECT email_id FROM messages WHERE mailbox = ? AND message_id = ? {scope} "
                      "ORDER BY received_at DESC LIMIT 1", [mailbox, message_id, *params]).fetchone()
    return str(row[0]) if row else None


def message_received_at(con: duckdb.DuckDBPyConnection, email_id: str) -> datetime | None:
    """When the stored message ``email_id`` was received (naive UTC), or None."""
    row = con.execute("SELECT received_at FROM messages WHERE email_id = ?", [email_id]).fetchone()
    return row[0] if row else None


def mailbox_email_ids(con: duckdb.DuckDBPyConnection, mailbox: str, *, agent: str | None = None,
                      before: tuple[datetime, str] | None = None, limit: int = 50) -> list[str]:
    """Email ids in ``mailbox``, newest first (then by email id, descending), only ``agent``'s when given;
    ``before`` a (received_at, email_id) cursor: only those after it in that order."""
    where: list[str] = ["mailbox = ?"]
    args: list[object] = [mailbox]
    if agent is not None:
        where.append("agent = ?")
        args.append(agent)
    if before is not None:
        where.append("(received_at < ? OR (received_at = ? AND email_id < ?))")
        args += [before[0], before[0], before[1]]
    return [str(r[0]) for r in con.execute(
        f"SELECT email_id FROM messages WHERE {' AND '.join(where)} ORDER BY received_at DESC, email_id DESC "
        "LIMIT ?", [*args, limit]).fetchall()]


def message_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many messages the store holds, every mailbox and agent."""
    row = con.execute("SELECT count(*) FROM messages").fetchone()
    return int(row[0]) if row else 0


def count_in_mailboxes(con: duckdb.DuckDBPyConnection, mailboxes: list[str]) -> int:
    """How many stored messages are in one of ``mailboxes``, every agent."""
    row = con.execute(f"SELECT count(*) FROM messages WHERE mailbox IN ({', '.join('?' for _ in mailboxes)})",
                      mailboxes).fetchone()
    return int(row[0]) if row else 0


def message_raw(con: duckdb.DuckDBPyConnection, email_id: str, agent: str) -> bytes | None:
    """The bytes of the agent's stored message ``email_id``, or None."""
    found = con.execute("SELECT raw FROM messages WHERE email_id = ? AND agent = ?", [email_id, agent]).fetchone()
    return bytes(found[0]) if found else None


def raws_by_id(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, bytes]:
    """The bytes of the stored messages among ``ids``, by email id."""
    rows = con.execute("SELECT email_id, raw FROM messages WHERE email_id IN (SELECT unnest(?::VARCHAR[]))",
                       [ids]).fetchall()
    return {str(i): bytes(r) for i, r in rows}


def raws_received_between(con: duckdb.DuckDBPyConnection, agent: str, ids: list[str], low: datetime,
                          high: datetime) -> dict[str, bytes]:
    """The bytes of the agent's stored messages among ``ids`` received from ``low`` to ``high``, by email id.

    Messages are stored in arrival order: the range lets DuckDB skip the rest of the table's bytes.
    """
    found = con.execute("SELECT email_id, raw FROM messages WHERE received_at BETWEEN ? AND ? AND email_id IN "
                        "(SELECT unnest(?::VARCHAR[])) AND agent = ?", [low, high, ids, agent]).fetchall()
    return {str(i): bytes(r) for i, r in found}


class MessageSender(msgspec.Struct, frozen=True):
    """A stored message's email id and sender."""

    email_id: str
    sender: str


def newest_sender(con: duckdb.DuckDBPyConnection, agent: str, mailbox: str, ids: list[str]) -> MessageSender | None:
    """The newest of the agent's messages among ``ids`` in ``mailbox``, with its sender, or None."""
    found = con.execute("SELECT email_id, sender FROM messages WHERE agent = ? AND mailbox = ? AND email_id IN "
                        "(SELECT unnest(?::VARCHAR[])) ORDER BY received_at DESC LIMIT 1",
                        [agent, mailbox, ids]).fetchone()
    return MessageSender(str(found[0]), str(found[1])) if found else None


def message_of_decision(con: duckdb.DuckDBPyConnection, decision_id: str) -> StoredMessage | None:
    """The stored message a decision let in (accepted, quarantined, dropped), bytes included, or None."""
    cols = _SUMMARY + ", keywords, raw"
    row = con.execute(f"SELECT {cols} FROM messages WHERE decision_id = ? ORDER BY received_at LIMIT 1",
                      [decision_id]).fetchone()
    return None if row is None else StoredMessage(**dict(zip(cols.split(", "), row, strict=True)))
