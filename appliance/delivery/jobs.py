"""Delivery jobs: written with the message, in the same transaction (same durability)."""

from __future__ import annotations

__all__ = ["enqueue", "new_delivery_id"]

import os
import time

import duckdb
import msgspec

from appliance.database import utc
from appliance.delivery.payload import MessageData, QuarantineData

EventData = MessageData | QuarantineData


def new_delivery_id() -> str:
    """The stable id an agent deduplicates on (``webhook-id``): time-ordered, unique."""
    return f"msg_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def enqueue(con: duckdb.DuckDBPyConnection, *, agent: str, event_type: str, data: EventData,
            email_id: str | None, decision_id: str | None, now: float) -> str:
    """Queue one event for an agent inside the caller's transaction; return its delivery id."""
    delivery_id = new_delivery_id()
    con.execute(
        "INSERT INTO deliveries (delivery_id, seq, agent, event_type, email_id, decision_id, created_at, status, "
        "attempts, next_attempt_at, payload) VALUES (?, nextval('delivery_seq'), ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
        [delivery_id, agent, event_type, email_id, decision_id, utc(now), now,
         msgspec.json.encode(data).decode()])
    return delivery_id
