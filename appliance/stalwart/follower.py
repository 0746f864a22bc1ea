"""Following Stalwart's accounts by JMAP push: the agent hears of a message once Stalwart stored it.

In stalwart mode the hook decides and records a message, its ``message.received``
job ``awaiting``; Stalwart then stores it (or, rarely, does not: a full
disk, a crash between our answer and its commit). For each agent the follower
keeps an EventSource open; on every Email state change it reads
``Email/changes`` from the saved state, finds our decision in each new
message's ``X-Appliance-Decision`` header and releases that decision's job
to the dispatcher. The new state is saved in the same transaction as the
releases, so after a restart it resumes where it was: a job is released at
most once (only ``awaiting`` jobs move), and none is missed. When Stalwart
cannot calculate changes from the saved state (``cannotCalculateChanges``), or
there is none yet, a bounded ``Email/query`` since the oldest job still
awaiting (less a margin) finds them instead: those are the only messages it
must find, and with none awaiting there is nothing to look for. Releasing twice
is impossible, so the overlap costs nothing.
"""

from __future__ import annotations

__all__ = ["AccountFollower", "CatchUp", "Follower", "decisions_in"]

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from appliance.mail.trace import DECISION_HEADER, decision_id_of
from appliance.stalwart.account import AccountClient, JmapCallError
from appliance.store.database import Batch, Database, utc
from appliance.store.deliveries import expire_awaiting, oldest_awaiting, release_awaiting
from appliance.store.stalwart import Cursor, StalwartKey, cursor, save_cursor, stalwart_keys

log = logging.getLogger("appliance.stalwart")

_DECISION_PROPERTY = f"header:{DECISION_HEADER}:asText:all"
_PROPERTIES = ["id", "receivedAt", _DECISION_PROPERTY]
MAX_CHANGES = 500
QUERY_PAGE = 500
QUERY_PAGES = 20
"""The fallback reads at most this many pages of ``QUERY_PAGE`` messages (then resumes on the next push)."""
MARGIN = timedelta(minutes=5)
"""How far before the oldest awaiting job the fallback looks: Stalwart's clock, and its second granularity."""
AWAITING_TTL = timedelta(days=1)
"""An awaiting job whose message Stalwart has not shown in this long is discarded (and logged)."""


class CatchUp(msgspec.Struct, frozen=True, kw_only=True):
    """What one catch-up of an account did."""

    released: int
    seen: int
    state: str
    fallback: bool


def decisions_in(emails: list[dict[str, Any]]) -> tuple[list[str], datetime | None]:
    """The decision ids our hook wrote into ``emails`` (the topmost header: Stalwart prepends ours and
    our hook deletes copies from outside) and the latest ``receivedAt`` among them."""
    found: list[str] = []
    latest: datetime | None = None
    for email in emails:
        values = email.get(_DECISION_PROPERTY)
        if isinstance(values, list) and values:
            decision = decision_id_of(values[0])
            if decision:
                found.append(decision)
        received = email.get("receivedAt")
        if isinstance(received, str):
            try:
                moment = datetime.fromisoformat(received.replace("Z", "+00:00"))
            except ValueError:
                continue
            latest = moment if latest is None or moment > latest else latest
    return found, latest


class AccountFollower:
    """Follows one agent's Stalwart account."""

    def __init__(self, *, agent: str, client: AccountClient, db: Database, on_released: Callable[[], None],
                 ping: int = 30) -> None:
        self.agent = agent
        self.client = client
        self.db = db
        self.on_released = on_released
        self.ping = ping
        self._lock = asyncio.Lock()  # one catch-up at a time: pushes during one coalesce into the next

    async def _emails(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        got = await self.client.call("Email/get", {"ids": ids, "properties": _PROPERTIES})
        listed = got.get("list")
        return [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []

    async def _commit(self, account_id: str, state: str, emails: list[dict[str, Any]],
                      last: datetime | None) -> int:
        decisions, latest = decisions_in(emails)
        if latest is None or (last is not None and last > latest):
            latest = last
        moved = Cursor(agent=self.agent, account_id=account_id, email_state=state, last_received_at=latest)
        now = time.time()

        def write(batch: Batch) -> int:
            released = release_awaiting(batch.con, self.agent, decisions, now) if decisions else 0
            save_cursor(batch, moved, utc(now))
            return released

        released = await self.db.write_batch(write)
        if released:
            self.on_released()
        return released

    async def catch_up(self) -> CatchUp:
        """Handle every change since the saved state; save the new one."""
        async with self._lock:
            account_id = await self.client.account_id()
            saved = await self.db.read(lambda con: cursor(con, self.agent))
            if saved is None or saved.account_id != account_id or saved.email_state is None:
                since = await self.db.read(lambda con: oldest_awaiting(con, self.agent))
                return await self._fallback(account_id, since, None)
            state, released, seen = saved.email_state, 0, 0
            last = saved.last_received_at
            while True:
                try:
                    changes = await self.client.call("Email/changes", {"sinceState": state, "maxChanges": MAX_CHANGES})
                except JmapCallError as exc:
                    if exc.kind != "cannotCalculateChanges":
                        raise
                    since = await self.db.read(lambda con: oldest_awaiting(con, self.agent))
                    log.warning("stalwart follower %s: cannot calculate changes from state %s; "
                                "querying since %s", self.agent, state, since)
                    fell = await self._fallback(account_id, since, last)
                    return msgspec.structs.replace(fell, released=fell.released + released, seen=fell.seen + seen)
                created = [str(i) for i in changes.get("created") or []]
                emails = await self._emails(created)
                state = str(changes.get("newState", state))
                released += await self._commit(account_id, state, emails, last)
                seen += len(emails)
                _, latest = decisions_in(emails)
                last = latest if latest is not None and (last is None or latest > last) else last
                if not changes.get("hasMoreChanges"):
                    return CatchUp(released=released, seen=seen, state=state, fallback=False)

    async def _fallback(self, account_id: str, since: datetime | None, last: datetime | None) -> CatchUp:
        """The current state first (later changes come from it), then every message since ``since``."""
        state = str((await self.client.call("Email/get", {"ids": [], "properties": ["id"]})).get("state", ""))
        released = seen = 0
        if since is not None:
            after = (since - MARGIN).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # a UTCDate
            for page in range(QUERY_PAGES):
                found = await self.client.call("Email/query", {
                    "filter": {"after": after}, "sort": [{"property": "receivedAt", "isAscending": True}],
                    "position": page * QUERY_PAGE, "limit": QUERY_PAGE})
                ids = [str(i) for i in found.get("ids") or []]
                emails = await self._emails(ids)
                seen += len(emails)
                released += await self._commit(account_id, state, emails, last) if emails else 0
                if len(ids) < QUERY_PAGE:
                    break
            else:
                log.warning("stalwart follower %s: more than %d messages since %s; the rest on the next change",
                            self.agent, QUERY_PAGES * QUERY_PAGE, after)
        if not seen:
            await self._commit(account_id, state, [], last)
        return CatchUp(released=released, seen=seen, state=state, fallback=True)

    async def run(self) -> None:
        """Catch up, then on each push; reconnect with backoff when the stream or Stalwart goes away."""
        backoff = 1.0
        while True:
            try:
                await self.catch_up()
                async for event in self.client.events(types="Email", ping=self.ping):
                    backoff = 1.0
                    if event.event == "open" or (event.event == "state" and _email_changed(event.data)):
                        await self.catch_up()  # on open: what changed before the stream could tell us
                log.info("stalwart follower %s: the push stream ended; reconnecting", self.agent)
            except (JmapCallError, httpx.HTTPError) as exc:
                log.warning("stalwart follower %s: %s; retrying in %.0f s", self.agent, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def _email_changed(data: str) -> bool:
    try:
        change = json.loads(data)
    except ValueError:
        return True  # unreadable: catching up costs one call and misses nothing
    changed = change.get("changed") if isinstance(change, dict) else None
    if not isinstance(changed, dict):
        return True
    return any(isinstance(types, dict) and "Email" in types for types in changed.values())


class Follower:
    """One ``AccountFollower`` per agent the appliance holds a Stalwart key for."""

    def __init__(self, *, http: httpx.AsyncClient, base_url: str, db: Database, on_released: Callable[[], None],
                 ping: int = 30) -> None:
        self.http = http
        self.base_url = base_url
        self.db = db
        self.on_released = on_released
        self.ping = ping
        self.accounts: dict[str, AccountFollower] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Follow every provisioned account (``appliance.stalwart.provision`` recorded their keys)."""
        keys: list[StalwartKey] = await self.db.read(stalwart_keys)
        for key in keys:
            follower = AccountFollower(agent=key.agent, client=AccountClient(self.http, self.base_url, key.secret),
                                       db=self.db, on_released=self.on_released, ping=self.ping)
            self.accounts[key.agent] = follower
            self._tasks.append(asyncio.create_task(follower.run(), name=f"stalwart-follower-{key.agent}"))

    async def catch_up_all(self) -> None:
        """Catch every account up now (after Stalwart restarted, say); errors are logged, not raised."""
        for follower in self.accounts.values():
            try:
                await follower.catch_up()
            except (JmapCallError, httpx.HTTPError) as exc:
                log.warning("stalwart follower %s: %s", follower.agent, exc)

    async def expire(self) -> int:
        """Discard awaiting jobs older than ``AWAITING_TTL``: Stalwart never stored their message."""
        expired = await self.db.write(lambda con: expire_awaiting(con, utc() - AWAITING_TTL))
        if expired:
            log.warning("stalwart follower: %d accepted message(s) never appeared in Stalwart in %s; "
                        "their webhooks are discarded", expired, AWAITING_TTL)
        return expired

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
