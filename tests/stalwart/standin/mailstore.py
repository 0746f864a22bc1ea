"""Accounts' mail: blobs, Emails in mailboxes, the change log and push on every change."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from app import App
from logs import log


def now_utc() -> str:
    """Now as a JMAP UTCDate."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def store_blob(app: App, account_id: str, content: bytes, content_type: str) -> dict[str, Any]:
    """Keep bytes as a blob of ``account_id``; its upload response."""
    blob_id = "G" + hashlib.sha256(content).hexdigest()[:40]
    app.state.write_blob(blob_id, content)
    with app.state.lock:
        record = app.state.data["blobs"].setdefault(blob_id, {"size": len(content), "type": content_type,
                                                              "accounts": []})
        if account_id not in record["accounts"]:
            record["accounts"].append(account_id)
        app.state.save()
    return {"accountId": account_id, "blobId": blob_id, "type": content_type, "size": len(content)}


def blob_of(app: App, account_id: str, blob_id: str) -> bytes | None:
    """A blob's bytes if ``account_id`` may read it."""
    with app.state.lock:
        record = app.state.data["blobs"].get(blob_id)
        if record is None or account_id not in record["accounts"]:
            return None
    return app.state.read_blob(blob_id)


def mailbox_with_role(app: App, account_id: str, role: str) -> str | None:
    """The id of the account's mailbox with ``role``."""
    with app.state.lock:
        for mailbox in app.state.data["mailboxes"].values():
            if mailbox["accountId"] == account_id and mailbox["role"] == role:
                return str(mailbox["id"])
    return None


def account_by_address(app: App, address: str) -> str | None:
    """The id of the account named ``address`` (a local recipient)."""
    with app.state.lock:
        for account in app.state.data["accounts"].values():
            if account["name"] == address.lower():
                return str(account["id"])
    return None


def is_local_domain(app: App, address: str) -> bool:
    """Whether the address's domain is one of ours."""
    domain = address.rpartition("@")[2].lower()
    with app.state.lock:
        return any(d["name"] == domain for d in app.state.data["domains"].values())


def add_email(app: App, account_id: str, raw: bytes, mailbox_ids: dict[str, bool], keywords: dict[str, bool],
              received_at: str | None = None) -> dict[str, Any]:
    """A new Email of ``account_id`` from raw bytes: stored, logged as a change, pushed."""
    blob = store_blob(app, account_id, raw, "message/rfc822")
    with app.state.lock:
        email_id = app.state.new_id()
        record = {
            "id": email_id, "accountId": account_id, "blobId": blob["blobId"], "threadId": "T" + email_id,
            "mailboxIds": dict(mailbox_ids), "keywords": dict(keywords), "receivedAt": received_at or now_utc(),
            "size": len(raw), "order": int(app.state.data["nextId"]),
        }
        app.state.data["emails"][email_id] = record
        app.state.record_change(account_id, "Email", email_id, "created")
        for mailbox_id in mailbox_ids:
            app.state.record_change(account_id, "Mailbox", mailbox_id, "updated")
        app.state.save()
    log("INFO", "store.email", f"Email {email_id} in account {account_id}", accountId=account_id, emailId=email_id,
        size=len(raw))
    app.hub.notify(account_id)
    return record


def deliver_local(app: App, account_id: str, raw: bytes) -> dict[str, Any] | None:
    """Put a received message into the account's Inbox."""
    inbox = mailbox_with_role(app, account_id, "inbox")
    if inbox is None:
        log("WARN", "delivery.noinbox", f"account {account_id} has no Inbox", accountId=account_id)
        return None
    return add_email(app, account_id, raw, {inbox: True}, {})


def changed(app: App, account_id: str, kind: str, object_id: str, change: str) -> None:
    """Log a change (caller holds the lock and saves); push goes out via ``push_after``."""
    app.state.record_change(account_id, kind, object_id, change)
