"""Blobs: bytes an agent uploads (``POST /api/v1/blobs``) to attach to the mail it sends.

One row per upload in the ``blobs`` table, the bytes included (the same DuckDB
file as the mail, so a send commits with the blobs it used). A blob belongs to
the agent that uploaded it; nobody else can name it. A blob not used for
``BLOB_TTL`` seconds (24 hours) expires: it can no longer be attached, and
``expire_blobs`` (run hourly) removes it. Attaching a blob to a send counts as
a use (``touch_blobs``, in the send's transaction).
"""

from __future__ import annotations

__all__ = [
    "BLOB_TTL",
    "Blob",
    "BlobInfo",
    "BlobRejected",
    "clean_content_type",
    "clean_filename",
    "expire_blobs",
    "get_blobs",
    "new_blob",
    "save_blob",
    "touch_blobs",
]

import hashlib
import os
import re
import time
import unicodedata
from datetime import timedelta

import duckdb
import msgspec

from appliance.store.database import Batch, utc
from appliance.store.outbound import (
    StoredBlob,
    blobs_used_since,
    delete_blobs_unused_since,
    insert_blob,
    mark_blobs_used,
)

BLOB_TTL = 86_400.0
"""Seconds a blob stays attachable after its upload or its last use."""

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(
    rf"(?P<type>{_TOKEN}/{_TOKEN})(?P<params>(\s*;\s*{_TOKEN}=({_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\"))*)\s*;?\s*")
"""RFC 2045 5.1: ``type/subtype`` and ``; attribute=value`` parameters, nothing that could end a header line."""
_MAX_FILENAME = 255


class BlobRejected(ValueError):
    """An upload the blob store will not keep (its ``Content-Type`` or filename); the message says why."""


class BlobInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What ``POST /api/v1/blobs`` answers: the id to name in ``attachments``, and what was stored."""

    blob_id: str
    size: int
    content_type: str
    filename: str | None


class Blob(StoredBlob, frozen=True, kw_only=True):
    """An uploaded blob, bytes included."""

    @property
    def info(self) -> BlobInfo:
        return BlobInfo(blob_id=self.blob_id, size=self.size, content_type=self.content_type,
                        filename=self.filename)


def clean_content_type(value: str | None) -> str:
    """The upload's media type, type and subtype lowercased; ``application/octet-stream`` when absent.

    Raises BlobRejected for anything that is not ``type/subtype`` with well-formed parameters
    (it ends up in the attachment's MIME header).
    """
    if value is None or not value.strip():
        return "application/octet-stream"
    found = _CONTENT_TYPE.fullmatch(value.strip())
    if found is None:
        raise BlobRejected(f"Content-Type {value[:100]!r} is not type/subtype with attribute=value parameters")
    return found["type"].lower() + found["params"]


def clean_filename(value: str | None) -> str | None:
    """The name to show for the attachment: its last path component, NFC, no control characters, 255 at most.

    None when absent or empty. Raises BlobRejected for a name that is only dots or control characters.
    """
    if value is None or not value.strip():
        return None
    name = unicodedata.normalize("NFC", value).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if not name or set(name) == {"."}:
        raise BlobRejected(f"filename {value[:100]!r} has nothing left once path and control characters go")
    return name[:_MAX_FILENAME]


def new_blob(*, agent: str, data: bytes, content_type: str, filename: str | None, now: float) -> Blob:
    """A blob for ``data`` with a fresh, time-ordered id (``b`` + 12 hex digits of ms + 16 random)."""
    return Blob(blob_id=f"b{int(now * 1000):012x}{os.urandom(8).hex()}", agent=agent.lower(),
                content_type=content_type, filename=filename, size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), created_at=utc(now), data=data)


def save_blob(con: duckdb.DuckDBPyConnection, blob: Blob) -> None:
    """Insert ``blob`` (its first use is its upload)."""
    insert_blob(con, blob)


def get_blobs(con: duckdb.DuckDBPyConnection, agent: str, blob_ids: list[str],
              now: float | None = None) -> dict[str, Blob]:
    """The agent's live (unexpired) blobs among ``blob_ids``, by id; others' and expired ones are absent."""
    if not blob_ids:
        return {}
    cutoff = utc((time.time() if now is None else now) - BLOB_TTL)
    return {b.blob_id: Blob(blob_id=b.blob_id, agent=b.agent, content_type=b.content_type, filename=b.filename,
                            size=b.size, sha256=b.sha256, created_at=b.created_at, data=b.data)
            for b in blobs_used_since(con, agent.lower(), blob_ids, cutoff)}


def touch_blobs(batch: Batch, blob_ids: list[str], now: float) -> None:
    """Mark blobs used now (a send attached them), in the writer's open batch: their 24 hours start again."""
    mark_blobs_used(batch, blob_ids, utc(now))


def expire_blobs(con: duckdb.DuckDBPyConnection, now: float | None = None) -> int:
    """Remove blobs unused for ``BLOB_TTL`` seconds; return how many went."""
    cutoff = utc(time.time() if now is None else now) - timedelta(seconds=BLOB_TTL)
    return delete_blobs_unused_since(con, cutoff)
