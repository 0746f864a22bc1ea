"""Delivery jobs: written with the message, in the same transaction (same durability).

A row of ``deliveries`` is one event for one agent. Its ``status``:

- ``pending``: to be sent to the agent's webhook (and readable on the event stream);
  an attempt in flight stays ``pending`` until its 2xx is recorded, so a crash
  means the same delivery id is simply sent again;
- ``delivered``: the webhook answered 2xx;
- ``dead``: the retry schedule ran out (``appliance deliveries replay`` sends it again);
- ``failed``: the endpoint answered 410 and was disabled (replayable too);
- ``stream``: for the event stream only: ``delivery.failed`` and ``endpoint.disabled``, and
  every event of an agent without a webhook (the dispatcher relabels its ``pending`` jobs);
- ``held``: a quarantined message's ``message.received``, released with the message;
- ``awaiting``: (stalwart mode) a ``message.received`` decided at the hook, released when the
  follower sees Stalwart stored the message (``appliance.stalwart.follower``): the agent never
  hears of mail the MTA did not keep; discarded if it never shows up;
- ``discarded``: a held job whose message was deleted.

``seq`` orders the event stream: it is drawn when the job becomes visible
(written, or released from ``held``), in the single writer's commit order, so
a reader resuming after the last ``seq`` it saw misses nothing.
"""

from __future__ import annotations

__all__ = ["HIDDEN_STATUSES", "enqueue", "new_delivery_id", "release_held"]

import os
import time

import duckdb
import msgspec

from appliance.delivery.payload import EventData
from appliance.store.database import Batch, utc
from appliance.store.deliveries import add_delivery, release_held

HIDDEN_STATUSES = ("held", "awaiting", "discarded")
"""Jobs the agent must not see (on the webhook or the stream)."""


def new_delivery_id() -> str:
    """The stable id an agent deduplicates on (``webhook-id``): time-ordered, unique."""
    return f"msg_{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def enqueue(tx: Batch | duckdb.DuckDBPyConnection, *, agent: str, event_type: str, data: EventData,
            email_id: str | None, decision_id: str | None, now: float, status: str = "pending") -> str:
    """Queue one event for an agent inside the caller's transaction (or open batch); return its delivery id."""
    delivery_id = new_delivery_id()
    batch = tx if isinstance(tx, Batch) else Batch(tx, {})
    add_delivery(batch, delivery_id=delivery_id, agent=agent, event_type=event_type, email_id=email_id,
                 decision_id=decision_id, created_at=utc(now), status=status, next_attempt_at=now,
                 payload=msgspec.json.encode(data).decode())
    if tx is not batch:
        batch.flush()
    return delivery_id

