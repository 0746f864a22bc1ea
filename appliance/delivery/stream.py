"""The event stream: an agent's deliveries read in ``seq`` order, resumable without gaps.

The stream is a read of the ``deliveries`` table (what the webhook is sent,
and the stream-only events), so an agent without a public URL gets the same
events, with the same ids, as one with a webhook. Each event's id is its
delivery id; a reader that reconnects with ``Last-Event-ID`` continues after
that delivery's ``seq`` (a plain number is taken as a ``seq``).
"""

from __future__ import annotations

__all__ = ["BadCursor", "StreamEvent", "event_stream", "resolve_cursor", "rows_after"]

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import duckdb

from appliance.delivery.jobs import HIDDEN_STATUSES
from appliance.delivery.notify import Broadcast
from appliance.delivery.render import render_event
from appliance.delivery.tokens import TokenIssuer
from appliance.store.database import Database
from appliance.store.deliveries import StreamRow, seq_of_delivery, visible_after


@dataclass(frozen=True)
class StreamEvent:
    """One event as the stream sends it."""

    seq: int
    delivery_id: str
    event_type: str
    data: bytes
    """The envelope, exactly as a webhook body would be (with a fresh capability token)."""


MAX_CURSOR_LENGTH = 128
"""Characters of a ``Last-Event-ID`` at most (a delivery id has 32, a ``seq`` at most 19)."""
_MAX_SEQ = 2**63 - 1


class BadCursor(ValueError):
    """A ``Last-Event-ID`` no stream could have sent: too long, or a number beyond any ``seq``."""


def resolve_cursor(con: duckdb.DuckDBPyConnection, agent: str, last_event_id: str | None) -> int:
    """The ``seq`` to continue after: 0 (from the start) when none is given or the id is unknown.

    ``BadCursor`` for a value that is not an event id at all (over-long, or a number past BIGINT).
    """
    value = (last_event_id or "").strip()
    if not value:
        return 0
    if len(value) > MAX_CURSOR_LENGTH:
        raise BadCursor(f"Last-Event-ID is {len(value)} characters: not an event id (at most {MAX_CURSOR_LENGTH})")
    if value.isascii() and value.isdigit():
        seq = int(value)
        if seq > _MAX_SEQ:
            raise BadCursor("Last-Event-ID is a number beyond any event's seq")
        return seq
    return seq_of_delivery(con, value, agent) or 0


def rows_after(con: duckdb.DuckDBPyConnection, agent: str, after: int, limit: int = 100) -> list[StreamRow]:
    """The agent's visible deliveries with ``seq > after``, in order."""
    return visible_after(con, agent, after, hidden=HIDDEN_STATUSES, limit=limit)


async def event_stream(db: Database, agent: str, after: int, *, tokens: TokenIssuer | None,
                       changed: Broadcast | None, keepalive: float = 15.0, batch: int = 100,
                       closed: Callable[[], bool] = lambda: False,
                       clock: Callable[[], float] = time.time) -> AsyncIterator[StreamEvent | None]:
    """Yield the agent's events after ``after`` until ``closed()``; ``None`` after ``keepalive`` quiet seconds.

    ``changed`` is notified when deliveries are committed (and when ``closed`` turns true);
    without it the table is polled each second.
    """
    cursor = after
    quiet_since = time.monotonic()
    while not closed():
        ticket = changed.ticket() if changed is not None else None
        rows = await db.read(functools.partial(rows_after, agent=agent, after=cursor, limit=batch))
        for row in rows:
            data = render_event(row.event_type, row.created_at, row.payload, tokens, clock())
            yield StreamEvent(seq=row.seq, delivery_id=row.delivery_id, event_type=row.event_type, data=data)
            cursor = row.seq
        if rows:
            quiet_since = time.monotonic()
            if len(rows) == batch:
                continue
        wait = keepalive - (time.monotonic() - quiet_since)
        if wait <= 0:
            yield None
            quiet_since = time.monotonic()
        elif ticket is not None:
            await Broadcast.wait(ticket, wait)
        else:
            await asyncio.sleep(min(1.0, wait))
