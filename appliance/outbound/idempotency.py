"""Idempotency keys for sends: a retried request gets the first answer, not a second message.

An agent may send ``Idempotency-Key: <key>`` with a reply or new mail. The
first request with a key that commits a send records the key, the SHA-256 of
the canonical request (``fingerprint``) and its ``SendResult``, in the send's
own transaction (so a record exists exactly when the message was queued). For
``IDEMPOTENCY_TTL`` seconds (24 hours):

- the same key with the same request answers that first result again;
- the same key with another request is refused (``idempotency_conflict``, 422);
- the same key while its first request is still being decided and committed is
  refused too (``idempotency_conflict``, 409: retry later), see ``InFlight``.

Keys are per agent: two agents may use the same key. A refused send records
nothing (retrying it with the same key is deciding it again).
"""

from __future__ import annotations

__all__ = [
    "IDEMPOTENCY_TTL",
    "MAX_KEY_LENGTH",
    "IdempotencyRecord",
    "InFlight",
    "check_key",
    "expire_keys",
    "find_key",
    "fingerprint",
    "remember_key",
]

import hashlib
import re
import time

import duckdb
import msgspec

from appliance.outbound.model import SendKind, SendRequest, SendResult
from appliance.store.database import Batch
from appliance.store.outbound import delete_keys_before, key_since, replace_key

IDEMPOTENCY_TTL = 86_400.0
"""Seconds a key is remembered after the send it answered."""

MAX_KEY_LENGTH = 255
_KEY = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII, no spaces (a UUID, a ULID, a hash...)."""


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A key's first committed send."""

    agent: str
    key: str
    request_sha256: str
    result: SendResult
    created_at: float
    """Unix seconds."""


class _Canonical(msgspec.Struct, frozen=True, kw_only=True):
    kind: SendKind
    parent_email_id: str | None
    request: SendRequest


def check_key(key: str) -> str:
    """``key`` when it is usable (1 to 255 visible ASCII characters); ValueError saying why otherwise."""
    if not 0 < len(key) <= MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValueError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters without "
                         f"spaces, got {key[:40]!r}{'...' if len(key) > 40 else ''}")
    return key


def fingerprint(kind: SendKind, parent_email_id: str | None, request: SendRequest) -> str:
    """SHA-256 (hex) of the request in canonical form: what is sent, where, in reply to what.

    The capability token is left out: it authorizes the request, it is not part of it (a
    retry may carry a fresh token for the same thread). Fields are encoded sorted, so the
    same request always hashes the same whatever order its JSON keys came in.
    """
    canonical = _Canonical(kind=kind, parent_email_id=parent_email_id,
                           request=msgspec.structs.replace(request, capability_token=None))
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def find_key(con: duckdb.DuckDBPyConnection, agent: str, key: str,
             now: float | None = None) -> IdempotencyRecord | None:
    """The agent's live record of ``key`` (younger than ``IDEMPOTENCY_TTL``), or None."""
    current = time.time() if now is None else now
    row = key_since(con, agent, key, current - IDEMPOTENCY_TTL)
    if row is None:
        return None
    return IdempotencyRecord(agent=agent, key=key, request_sha256=row.request_sha256, created_at=row.created_at,
                             result=msgspec.json.decode(row.result, type=SendResult))


def remember_key(batch: Batch, record: IdempotencyRecord) -> None:
    """Record a key's send in the writer's open batch (replacing an expired record of the same key)."""
    replace_key(batch, agent=record.agent, key=record.key, request_sha256=record.request_sha256,
                email_id=record.result.email_id, result=msgspec.json.encode(record.result).decode(),
                created_at=record.created_at)


def expire_keys(con: duckdb.DuckDBPyConnection, now: float | None = None) -> int:
    """Forget keys older than ``IDEMPOTENCY_TTL``; return how many."""
    cutoff = (time.time() if now is None else now) - IDEMPOTENCY_TTL
    return delete_keys_before(con, cutoff)


class InFlight:
    """The keys whose first request is being decided and committed right now (one process holds the database).

    Between looking a key up and committing its record there are awaits; a second request
    with the same key meanwhile would find nothing and send again. It is told to retry instead.
    """

    def __init__(self) -> None:
        self._keys: set[tuple[str, str]] = set()

    def claim(self, agent: str, key: str) -> bool:
        """Take ``key`` for ``agent``; False when a request holding it is still running."""
        if (agent, key) in self._keys:
            return False
        self._keys.add((agent, key))
        return True

    def release(self, agent: str, key: str) -> None:
        self._keys.discard((agent, key))
