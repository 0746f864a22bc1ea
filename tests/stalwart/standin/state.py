"""The stand-in's persistent state: one JSON document in the data dir, blobs as files beside it.

Every change is saved at once (temp file + os.replace), so a crash never leaves half a state.
Observations for tests (requests, violations, outbox, hook calls) live in memory only.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def _empty() -> dict[str, Any]:
    return {
        "nextId": 1,
        "bootstrap": None,
        "domains": {},
        "dkim": {},
        "accounts": {},
        "apiKeys": {},
        "hooks": {},
        "certificates": {},
        "mailboxes": {},
        "emails": {},
        "blobs": {},
        "changes": {},
        "submissions": {},
        "managementState": 1,
    }


def short_id(number: int) -> str:
    """A short id string for a counter value, in the style of Stalwart's ids (``b``, ``c2``, ...)."""
    digits = ""
    while True:
        number, rest = divmod(number, 32)
        digits = _ALPHABET[rest] + digits
        if number == 0:
            return digits


class State:
    """The document, its lock and its files. Callers hold ``lock`` while reading or changing ``data``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "standin-state.json"
        self.blob_dir = data_dir / "blobs"
        self.lock = threading.RLock()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.data: dict[str, Any] = {**_empty(), **json.loads(self.path.read_text("utf-8"))}
        else:
            self.data = _empty()
        # Observations for tests: not persisted.
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.outbox: list[dict[str, Any]] = []
        self.hook_calls: list[dict[str, Any]] = []

    def new_id(self) -> str:
        """The next unused short id (ids are unique across all object kinds)."""
        with self.lock:
            number = int(self.data["nextId"])
            self.data["nextId"] = number + 1
            return short_id(number)

    def save(self) -> None:
        """Write the document atomically."""
        with self.lock:
            temp = self.path.with_suffix(".tmp")
            temp.write_text(json.dumps(self.data, indent=1, sort_keys=True), "utf-8")
            os.replace(temp, self.path)

    def violation(self, text: str) -> None:
        """Record a shape violation (what field, what was expected)."""
        with self.lock:
            self.violations.append(text)

    def write_blob(self, blob_id: str, content: bytes) -> None:
        """Store a blob's bytes atomically under its id."""
        path = self.blob_dir / blob_id
        if path.exists():
            return
        temp = path.with_suffix(".tmp")
        temp.write_bytes(content)
        os.replace(temp, path)

    def read_blob(self, blob_id: str) -> bytes | None:
        """A blob's bytes, None if unknown."""
        if not blob_id.replace("_", "").isalnum():
            return None
        path = self.blob_dir / blob_id
        return path.read_bytes() if path.exists() else None

    # Change log: one numeric state per account, every Email/Mailbox change logged against it.

    def account_state(self, account_id: str) -> int:
        """The account's current state number."""
        with self.lock:
            return int(self.data["changes"].get(account_id, {}).get("state", 1))

    def record_change(self, account_id: str, kind: str, object_id: str, change: str) -> int:
        """Log ``change`` (created/updated/destroyed) of ``kind`` object ``object_id``; the new state."""
        with self.lock:
            entry = self.data["changes"].setdefault(account_id, {"state": 1, "floor": 1, "log": []})
            entry["state"] += 1
            entry["log"].append([entry["state"], kind, object_id, change])
            return int(entry["state"])

    def forget_changes(self) -> None:
        """From now on no earlier state can be caught up from (cannotCalculateChanges)."""
        with self.lock:
            for account_id in self.data["accounts"]:
                entry = self.data["changes"].setdefault(account_id, {"state": 1, "floor": 1, "log": []})
                entry["floor"] = entry["state"]
                entry["log"] = []
            self.save()
