"""JMAP push over EventSource (RFC 8620 7.3): a StateChange within a second of any change.

One loop per service reads the change log's new rows (``changes.changed_after``)
whenever something is committed (the JMAP methods wake it; new mail wakes it
through the delivery dispatcher's broadcast) and at least every ``POLL``
seconds (the fallback for writers that wake no one), after bringing the index
up to date. Each subscriber gets the changed types of its accounts, filtered
by its ``types``, with their new states.

Event ids are positions in the change log: a client that reconnects with
``Last-Event-ID`` gets one StateChange at once if anything of its accounts
changed meanwhile. ``ping`` (seconds, clamped to ``PING_RANGE``) sends
``ping`` events carrying ``{"interval": n}``; without pings the stream sends
an SSE comment every ``KEEPALIVE`` quiet seconds so proxies keep it open.
"""

from __future__ import annotations

__all__ = ["KEEPALIVE", "PING_RANGE", "POLL", "PushHub", "StreamEvent", "Subscriber"]

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from appliance.jmap import changes
from appliance.store.changes import latest_seq
from appliance.store.database import DatabaseClosed

if TYPE_CHECKING:
    from appliance.jmap.service import JmapService

log = logging.getLogger("appliance.jmap")

POLL = 0.25
"""Seconds between looks at the log when nothing woke the loop."""
PING_RANGE = (1, 3600)
"""A requested ping interval is clamped into this range (RFC 8620 7.3: minimum at most 30, maximum at least 300)."""
KEEPALIVE = 30.0
PRUNE_EVERY = 3600.0

_JSON = msgspec.json.Encoder()


class StreamEvent(msgspec.Struct, frozen=True):
    """One server-sent event: ``event`` is ``state`` or ``ping`` (``None``: a keep-alive comment)."""

    event: str | None
    data: str
    id: str | None = None


class Subscriber:
    def __init__(self, accounts: dict[str, str], types: frozenset[str] | None) -> None:
        self.accounts = accounts
        """agent -> account id."""
        self.types = types
        """None: every type."""
        self.queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue(maxsize=1000)

    def change_for(self, changed: dict[str, set[str]], states: dict[str, changes.AccountStates]
                   ) -> dict[str, Any] | None:
        out: dict[str, dict[str, str]] = {}
        for agent, types in changed.items():
            account = self.accounts.get(agent)
            if account is None or agent not in states:
                continue
            wanted = types if self.types is None else types & self.types
            if wanted:
                out[account] = {t: states[agent].state(t) for t in sorted(wanted)}
        return {"@type": "StateChange", "changed": out} if out else None

    def offer(self, seq: int, changed: dict[str, set[str]], states: dict[str, changes.AccountStates]) -> None:
        change = self.change_for(changed, states)
        if change is not None:
            with contextlib.suppress(asyncio.QueueFull):  # a reader that stopped reading misses states, not memory
                self.queue.put_nowait((seq, change))


class PushHub:
    """The service's push loop and its subscribers."""

    def __init__(self, service: JmapService) -> None:
        self.service = service
        self.subscribers: set[Subscriber] = set()
        self.seq: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pruned = time.monotonic()
        """Retention runs an hour after start, then hourly (not while the first requests are answered)."""

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="jmap-push")

    def wake(self) -> None:
        self._wake.set()

    async def _wait(self) -> None:
        dispatcher = self.service.runtime.dispatcher
        waits = [asyncio.ensure_future(self._wake.wait())]
        if dispatcher is not None:
            waits.append(asyncio.ensure_future(dispatcher.changed.ticket().wait()))
        try:
            await asyncio.wait(waits, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._wake.clear()

    async def _run(self) -> None:
        runtime = self.service.runtime
        while runtime.started:
            try:
                await self.service.indexer.sync(full=True)
                await self.publish()
                if time.monotonic() - self._pruned > PRUNE_EVERY:
                    self._pruned = time.monotonic()
                    await self.service.prune()
            except DatabaseClosed:
                return
            except Exception:  # keep pushing: one bad round must not end every stream
                log.exception("JMAP push round failed")
                await asyncio.sleep(1)
            await self._wait()

    async def publish(self) -> None:
        """Tell every subscriber what changed since the last round."""
        db = self.service.db
        if self.seq is None:
            self.seq = await db.read(latest_seq)
            return
        seq = self.seq
        top, changed = await db.read(lambda con: changes.changed_after(con, seq))
        if not changed:
            return
        self.seq = top
        if not self.subscribers:
            return
        states = await db.read(lambda con: {a: s for a in changed if (s := changes.read_states(con, a)) is not None})
        for subscriber in list(self.subscribers):
            subscriber.offer(top, changed, states)

    async def catch_up(self, subscriber: Subscriber, after: int) -> None:
        """A reconnecting client: one StateChange now if its accounts changed after log position ``after``."""
        top, changed = await self.service.db.read(lambda con: changes.changed_after(con, after))
        if changed:
            states = await self.service.db.read(
                lambda con: {a: s for a in changed if (s := changes.read_states(con, a)) is not None})
            subscriber.offer(top, changed, states)

    async def stream(self, subscriber: Subscriber, *, close_after_state: bool, ping: int,
                     last_event_id: str | None) -> AsyncIterator[StreamEvent]:
        """The events of one EventSource connection, until the client leaves or the appliance stops."""
        runtime = self.service.runtime
        self.start()
        self.subscribers.add(subscriber)
        try:
            if self.seq is None:
                await self.publish()  # learn the log's position before the first wait
            if last_event_id and last_event_id.isascii() and last_event_id.isdigit() and len(last_event_id) < 19:
                await self.catch_up(subscriber, int(last_event_id))
            interval = float(ping) if ping else KEEPALIVE
            quiet_since = time.monotonic()
            while runtime.started:
                dispatcher = runtime.dispatcher
                if dispatcher is not None and dispatcher.streams_closed:
                    return
                try:
                    seq, change = await asyncio.wait_for(subscriber.queue.get(), timeout=min(1.0, interval))
                except TimeoutError:
                    if time.monotonic() - quiet_since >= interval:
                        quiet_since = time.monotonic()
                        if ping:
                            yield StreamEvent(event="ping", data=_JSON.encode({"interval": ping}).decode())
                        else:
                            yield StreamEvent(event=None, data="keepalive")
                    continue
                yield StreamEvent(event="state", data=_JSON.encode(change).decode(), id=str(seq))
                quiet_since = time.monotonic()
                if close_after_state:
                    return
        finally:
            self.subscribers.discard(subscriber)
