"""The operator's view of deliveries: list, show, replay, retry now, re-enable an endpoint.

Shared by the admin API and the CLI (which runs them on the database file
when no appliance holds it). Replaying a ``dead`` or ``failed`` delivery puts
it back to ``pending`` with the same delivery id and restarts its retry
schedule; it does not re-enable a disabled endpoint: ``enable`` does that
(the replay says so), so one replay cannot silently release a backlog.
Retrying a ``pending`` delivery now moves its next attempt to now, without
touching its schedule (the attempt counts as the next of its round).
"""

from __future__ import annotations

__all__ = [
    "REPLAYABLE",
    "AttemptRecord",
    "DeliveryDetail",
    "DeliveryNotFound",
    "DeliverySummary",
    "EndpointState",
    "NotReplayable",
    "NotRetryable",
    "ReplayResult",
    "enable_endpoint",
    "endpoint_states",
    "get_delivery",
    "list_deliveries",
    "replay",
    "retry_now",
]

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import duckdb
import msgspec

from appliance.audit import record_event
from appliance.store import deliveries as store
from appliance.store.database import utc

REPLAYABLE = ("dead", "failed")


class DeliveryNotFound(LookupError):
    """No delivery has that id."""


class NotReplayable(ValueError):
    """The delivery is not dead or failed."""


class NotRetryable(ValueError):
    """The delivery is not pending (nothing is waiting to be retried)."""


class DeliverySummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    delivery_id: str
    """The ``webhook-id`` (and event-stream id) the agent deduplicates on."""
    seq: int
    agent: str
    event_type: str
    email_id: str | None
    decision_id: str | None
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    attempt: int
    ts: datetime
    status: int | None
    """The HTTP status answered; null when there was no answer (see ``error``)."""
    latency_ms: float | None
    error: str | None


class EndpointState(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    agent: str
    url: str | None
    disabled: bool
    disabled_at: datetime | None = None
    reason: str | None = None


class DeliveryDetail(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    delivery: DeliverySummary
    attempts: list[AttemptRecord]
    data: Any
    """The event's ``data`` as stored (the capability token is added at send time)."""
    endpoint: EndpointState


class ReplayResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    delivery_id: str
    status: str
    endpoint_disabled: bool
    """True when the agent's endpoint is disabled: nothing is sent until it is enabled again."""


def _summary(record: store.DeliveryRecord) -> DeliverySummary:
    values = {f: getattr(record, f) for f in store.DeliveryRecord.__struct_fields__}  # a StoredDelivery's payload too
    nxt = record.next_attempt_at
    values["next_attempt_at"] = utc(nxt) if nxt is not None and record.status == "pending" else None
    return DeliverySummary(**values)


def list_deliveries(con: duckdb.DuckDBPyConnection, *, status: str | None = None, agent: str | None = None,
                    event_type: str | None = None, before: int | None = None,
                    limit: int = 50) -> list[DeliverySummary]:
    """Newest first; pass the last ``seq`` seen as ``before`` for the next page."""
    records = store.list_deliveries(con, status=status, agent=agent.lower() if agent else None,
                                    event_type=event_type, before=before, limit=max(1, min(limit, 1000)))
    return [_summary(r) for r in records]


def endpoint_states(con: duckdb.DuckDBPyConnection, urls: Mapping[str, str | None]) -> list[EndpointState]:
    """Every configured agent's webhook and whether it is disabled (``urls``: agent -> webhook_url)."""
    disabled = {e.agent: e for e in store.disabled_endpoints(con)}
    out = []
    for agent in sorted({*urls, *disabled}):
        row = disabled.get(agent)
        out.append(EndpointState(agent=agent, url=urls.get(agent), disabled=row is not None,
                                 disabled_at=row.disabled_at if row else None, reason=row.reason if row else None))
    return out


def get_delivery(con: duckdb.DuckDBPyConnection, delivery_id: str,
                 urls: Mapping[str, str | None] | None = None) -> DeliveryDetail | None:
    """One delivery with its attempts, its data and its endpoint's state."""
    stored = store.get_delivery(con, delivery_id)
    if stored is None:
        return None
    summary = _summary(stored)
    attempts = [AttemptRecord(attempt=a.attempt, ts=a.ts, status=a.status, latency_ms=a.latency_ms, error=a.error)
                for a in store.attempts_of(con, delivery_id)]
    states = endpoint_states(con, {summary.agent: (urls or {}).get(summary.agent)})
    endpoint = next(s for s in states if s.agent == summary.agent)
    return DeliveryDetail(delivery=summary, attempts=attempts, data=msgspec.json.decode(stored.payload),
                          endpoint=endpoint)


def replay(con: duckdb.DuckDBPyConnection, delivery_id: str, *, now: float, by: str) -> ReplayResult:
    """Send a dead or failed delivery again, same id, schedule restarted."""
    state = store.delivery_state(con, delivery_id)
    if state is None:
        raise DeliveryNotFound(f"no delivery {delivery_id}")
    agent, status = state.agent, state.status
    if status not in REPLAYABLE:
        raise NotReplayable(f"delivery {delivery_id} is {status}; only {' or '.join(REPLAYABLE)} ones are replayed")
    store.replay_delivery(con, delivery_id, now=now)
    record_event(con, "delivery.replayed", agent, f"{delivery_id} ({status}) replayed by {by}")
    disabled = store.endpoint_disabled(con, agent)
    return ReplayResult(delivery_id=delivery_id, status="pending", endpoint_disabled=disabled)


def retry_now(con: duckdb.DuckDBPyConnection, delivery_id: str, *, now: float, by: str) -> ReplayResult:
    """Make a pending delivery due now (its next attempt is otherwise hours away, say)."""
    state = store.delivery_state(con, delivery_id)
    if state is None:
        raise DeliveryNotFound(f"no delivery {delivery_id}")
    agent, status, attempts = state.agent, state.status, state.attempts
    if status in REPLAYABLE:
        raise NotRetryable(f"delivery {delivery_id} is {status}; replay it to send it again (same id)")
    if status != "pending":
        raise NotRetryable(f"delivery {delivery_id} is {status}; only pending ones are retried")
    store.make_due(con, delivery_id, now=now)
    record_event(con, "delivery.retried", agent,
                 f"{delivery_id} (pending, {attempts} attempt(s)) retried now by {by}")
    disabled = store.endpoint_disabled(con, agent)
    return ReplayResult(delivery_id=delivery_id, status="pending", endpoint_disabled=disabled)


def enable_endpoint(con: duckdb.DuckDBPyConnection, agent: str, *, by: str) -> bool:
    """Re-enable an agent's disabled webhook; False when it was not disabled."""
    agent = agent.strip().lower()
    if not store.reenable_endpoint(con, agent, reason=f"enabled by {by}"):
        return False
    record_event(con, "endpoint.enabled", agent, f"webhook re-enabled by {by}")
    return True
