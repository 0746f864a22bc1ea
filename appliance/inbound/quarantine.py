"""The operator's review of held mail: list, show, release, delete.

A quarantined message is stored with its ``message.received`` delivery job
already written but ``held``: releasing it moves the message to the inbox
and lets the job go (the agent then gets it as if it had just arrived);
deleting it removes the message and discards the job. Both are audited.
"""

from __future__ import annotations

__all__ = ["HeldMessage", "delete", "list_held", "release", "show"]

import time

import duckdb
import msgspec

from appliance.audit import record_event
from appliance.delivery.jobs import release_held
from appliance.store.audit import decision_reason
from appliance.store.deliveries import discard_held
from appliance.store.messages import (
    INBOX,
    QUARANTINE,
    MessageSummary,
    delete_message,
    get_message,
    list_messages,
    message_agent,
    move_message,
)


class HeldMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A quarantined message with why it was held."""

    message: MessageSummary
    reason: str | None
    raw: str
    """The stored bytes, decoded for display (replacement characters where not UTF-8)."""


def list_held(con: duckdb.DuckDBPyConnection, agent: str | None = None, limit: int = 100) -> list[MessageSummary]:
    """Quarantined messages, newest first."""
    return list_messages(con, mailbox=QUARANTINE, agent=agent, limit=limit)


def show(con: duckdb.DuckDBPyConnection, email_id: str) -> HeldMessage | None:
    """One quarantined message, with its decision's reason."""
    stored = get_message(con, email_id)
    if stored is None or stored.mailbox != QUARANTINE:
        return None
    summary = MessageSummary(**{f: getattr(stored, f) for f in MessageSummary.__struct_fields__})
    return HeldMessage(message=summary, reason=decision_reason(con, stored.decision_id),
                       raw=stored.raw.decode("utf-8", "replace"))


def release(con: duckdb.DuckDBPyConnection, email_id: str, *, by: str = "operator") -> bool:
    """Move a held message to the inbox and let its delivery go; False when it is not held."""
    if not move_message(con, email_id, from_mailbox=QUARANTINE, to_mailbox=INBOX):
        return False
    release_held(con, email_id, time.time())
    record_event(con, "quarantine.released", message_agent(con, email_id), f"{email_id} released by {by}")
    return True


def delete(con: duckdb.DuckDBPyConnection, email_id: str, *, by: str = "operator") -> bool:
    """Delete a held message and discard its delivery; False when it is not held."""
    agent = message_agent(con, email_id, mailbox=QUARANTINE)
    if agent is None or not delete_message(con, email_id, mailbox=QUARANTINE):
        return False
    discard_held(con, email_id)
    record_event(con, "quarantine.deleted", agent, f"{email_id} deleted by {by}")
    return True
