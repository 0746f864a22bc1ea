"""The JMAP service of a running sandbox: who may see which account, the indexer, the limits.

One ``JmapService`` per running appliance (``for_runtime``). It answers
three questions for the HTTP layer and the methods:

- which accounts a caller sees (an agent key: its own; the admin token: all),
  and which agent an account id is (``agent_for``: an account the caller may
  not see is ``accountNotFound``, exactly like one that does not exist, and
  the attempt is audited);
- whether the JMAP index holds everything the store lets agents see
  (``Indexer.sync``): messages queued by ``changes.record_created``, and, as
  the fallback for writers that do not call it, whatever a cheap fingerprint
  of ``messages`` says changed;
- what the limits are (``CoreLimits``).
"""

from __future__ import annotations

__all__ = ["Caller", "Indexer", "JmapService", "for_runtime"]

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import msgspec

from appliance.audit import record_event
from appliance.jmap import changes, local
from appliance.jmap.cache import AccountIndex
from appliance.jmap.mime import summarize
from appliance.jmap.proto import CoreLimits, MethodError
from appliance.store import jmap as jmap_store
from appliance.store import messages
from appliance.store.changes import clear_pending, pending
from appliance.store.database import Batch, Database, utc
from appliance.store.jmap import UnindexedMessage

if TYPE_CHECKING:
    from appliance.jmap.push import PushHub
    from appliance.runtime import Runtime

log = logging.getLogger("appliance.jmap")

INDEX_CHUNK = 1_000
"""Messages read and indexed per transaction."""


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who is calling: an agent (its key) or the operator (the admin token)."""

    name: str
    """The agent's address, or ``admin``."""
    agents: tuple[str, ...]
    """The agents whose accounts the caller sees."""
    admin: bool = False


class Indexer:
    """Brings ``jmap_emails`` up to date with the store, recording every change it makes."""

    def __init__(self, service: JmapService) -> None:
        self.service = service
        self._lock = asyncio.Lock()
        self._ready: set[str] = set()
        self._fingerprint: tuple[Any, ...] | None = None

    @property
    def fresh(self) -> bool:
        """Never synced yet (no account made, the store never compared)."""
        return self._fingerprint is None
    async def sync(self, *, full: bool = True) -> bool:
        """Index what is waiting and, with ``full``, whatever the store's fingerprint says changed. True if any.

        The fingerprint (how many messages, how many held, the newest) is a millisecond's read; only
        when it moved is the store compared with the index row by row.
        """
        db = self.service.db
        async with self._lock:
            agents = self.service.agents
            missing = [a for a in agents if a not in self._ready]
            if missing:
                await db.write(lambda con: _ensure_accounts(con, missing))
                self._ready.update(missing)
            reconcile = full or self._fingerprint is None
            fingerprint, queued, fresh, gone = await db.read(
                lambda con: local.snapshot(con, lambda c: self._find(c, agents, reconcile)))
            if not (queued or fresh or gone):
                if reconcile:
                    self._fingerprint = fingerprint
                return False
            await self._index(fresh)
            if gone:
                await db.write(lambda con: _forget(con, gone))
            leftover = sorted(set(queued) - {r.email_id for r in fresh})
            if leftover:
                await db.write(lambda con: clear_pending(con, leftover))
            if reconcile:  # only now: a request that finds the store moved on waits for this sync to finish
                self._fingerprint = fingerprint
            return True

    def behind(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether ``sync`` has work (one query: the queue, and the store's fingerprint)."""
        if self._fingerprint is None or any(a not in self._ready for a in self.service.agents):
            return True
        fingerprint, waiting = local.fingerprint_and_pending(con)
        return waiting or fingerprint != self._fingerprint

    def _find(self, con: duckdb.DuckDBPyConnection, agents: Sequence[str], reconcile: bool
              ) -> tuple[tuple[Any, ...], list[str], list[UnindexedMessage], list[tuple[str, str]]]:
        queued = [p.id for p in pending(con)]
        fresh = local.unindexed(con, agents, queued) if queued else []
        fingerprint: tuple[Any, ...] = ()
        if reconcile:
            fingerprint = local.fingerprint(con)
            if fingerprint != self._fingerprint and not self._explained(con, fingerprint, fresh):
                return fingerprint, queued, local.unindexed(con, agents), local.vanished(con)
        return fingerprint, queued, fresh, []

    def _explained(self, con: duckdb.DuckDBPyConnection, fingerprint: tuple[Any, ...],
                   fresh: list[UnindexedMessage]) -> bool:
        """Whether the queued messages account for what moved in the store, so no row-by-row compare is needed.

        Nothing released or deleted by the quarantine (``events`` unchanged), and the store shows
        agents exactly as many messages as the index holds plus the queued ones: the usual case
        once intakes call ``record_created``.
        """
        if self._fingerprint is None or not fresh or fingerprint[1:] != self._fingerprint[1:]:
            return False
        return local.visible_count(con) == jmap_store.indexed_store_count(con) + len(fresh)

    async def _index(self, refs: list[UnindexedMessage]) -> None:
        """Index in chunks, reading and parsing the next chunk while the writer commits this one."""
        db = self.service.db

        async def prepare(chunk: list[UnindexedMessage]) -> list[local.IndexEntry]:
            raws = await db.read(lambda con: messages.raws_by_id(con, [r.email_id for r in chunk]))
            return await asyncio.to_thread(_entries, chunk, raws)

        chunks = [refs[i:i + INDEX_CHUNK] for i in range(0, len(refs), INDEX_CHUNK)]
        upcoming = asyncio.ensure_future(prepare(chunks[0])) if chunks else None
        try:
            for i, chunk in enumerate(chunks):
                assert upcoming is not None
                entries = await upcoming
                upcoming = asyncio.ensure_future(prepare(chunks[i + 1])) if i + 1 < len(chunks) else None
                ids = [r.email_id for r in chunk]
                await db.write_batch(lambda batch, e=entries, i_=ids: _apply(batch, e, i_))  # type: ignore[misc]
        finally:
            if upcoming is not None:
                upcoming.cancel()


def _ensure_accounts(con: duckdb.DuckDBPyConnection, agents: list[str]) -> None:
    for agent in agents:
        local.ensure_account(con, agent)


def _entries(refs: list[UnindexedMessage], raws: dict[str, bytes]) -> list[local.IndexEntry]:
    out = []
    for ref in refs:
        raw = raws.get(ref.email_id)
        if raw is None:
            continue
        keywords = sorted({k.lower() for k in ref.keywords if k})
        out.append(local.IndexEntry(
            email_id=ref.email_id, agent=ref.agent, source="store", thread_id=ref.thread_id,
            mailbox_ids=[local.STORE_MAILBOXES[ref.mailbox]], keywords=keywords, received_at=ref.received_at,
            size=ref.size, decision_id=ref.decision_id, summary=summarize(raw)))
    return out


def _apply(batch: Batch, entries: list[local.IndexEntry], ids: list[str]) -> None:
    con = batch.con
    by_agent: dict[str, list[local.IndexEntry]] = {}
    for entry in entries:
        by_agent.setdefault(entry.agent, []).append(entry)
    for agent, group in by_agent.items():
        local.ensure_account(con, agent)
        done = jmap_store.existing_emails(con, agent, [e.email_id for e in group])
        fresh = [e for e in group if e.email_id not in done]
        if not fresh:
            continue
        tracker = local.EmailTracker(con, agent)
        tracker.before([e.email_id for e in fresh], threads=[e.thread_id for e in fresh])
        local.insert_emails(batch, fresh)
        batch.flush()
        tracker.delivered = [e.email_id for e in fresh if e.mailbox_ids == ["inbox"]]
        tracker.finish()
    clear_pending(con, ids)


def _forget(con: duckdb.DuckDBPyConnection, gone: list[tuple[str, str]]) -> None:
    by_agent: dict[str, list[str]] = {}
    for agent, email_id in gone:
        by_agent.setdefault(agent, []).append(email_id)
    for agent, ids in by_agent.items():
        tracker = local.EmailTracker(con, agent)
        tracker.before(ids)
        jmap_store.delete_index_rows(con, agent, ids)
        tracker.finish()


class JmapService:
    """The JMAP face of one running appliance (sandbox mode)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.db: Database = runtime.db
        config = runtime.config
        self.limits = CoreLimits(max_size_upload=config.smtp.max_message_size)
        self.max_query_limit = 5_000
        self.indexer = Indexer(self)
        self.inflight: Counter[str] = Counter()
        self.uploads: Counter[str] = Counter()
        self.hostname = config.hostname
        self._push: PushHub | None = None
        self._indexes: dict[str, AccountIndex] = {}

    @property
    def agents(self) -> list[str]:
        return sorted({a.address.lower() for a in self.runtime.config.agents})

    def index(self, agent: str) -> AccountIndex:
        """The account's in-memory list index (``appliance.jmap.cache``)."""
        found = self._indexes.get(agent)
        if found is None:
            found = self._indexes.setdefault(agent, AccountIndex(agent))
        return found

    @property
    def push(self) -> PushHub:
        if self._push is None:
            from appliance.jmap.push import PushHub

            self._push = PushHub(self)
        return self._push

    def caller(self, agent: str | None) -> Caller:
        if agent is None:
            return Caller(name="admin", agents=tuple(self.agents), admin=True)
        return Caller(name=agent, agents=(agent,) if agent in self.agents else ())

    def accounts(self, caller: Caller) -> dict[str, str]:
        """account id -> agent, for the accounts ``caller`` sees."""
        return {local.account_id(a): a for a in caller.agents}

    async def agent_for(self, caller: Caller, account_id: object) -> str:
        """The agent of ``account_id`` if the caller may see it; ``accountNotFound`` (audited) otherwise."""
        if isinstance(account_id, str):
            agent = self.accounts(caller).get(account_id)
            if agent is not None:
                return agent
        shown = str(account_id)[:80]
        detail = f"{caller.name} asked for JMAP account {shown!r}, which it may not see"
        try:
            await self.db.write(lambda con: record_event(con, "jmap.account_denied",
                                                         None if caller.admin else caller.name, detail))
        except Exception:  # the answer does not depend on the audit row
            log.exception("could not audit a denied JMAP account")
        raise MethodError("accountNotFound")

    async def ready(self, *, sync: bool = False) -> None:
        """Push is running; the accounts exist (with ``sync``: the index holds what the store shows)."""
        self.push.start()
        if sync or self.indexer.fresh:
            await self.indexer.sync()

    def notify(self) -> None:
        """Something was committed: push looks now."""
        if self._push is not None:
            self._push.wake()

    def tokens(self) -> Any:
        dispatcher = self.runtime.dispatcher
        return dispatcher.tokens if dispatcher is not None else None

    @property
    def now(self) -> float:
        return time.time()

    async def prune(self) -> None:
        """Retention: changes older than ``changes.RETENTION``, uploads older than a day."""
        cutoff = utc(time.time() - 86_400)
        await self.db.write(lambda con: (changes.prune(con), jmap_store.delete_blobs_before(con, cutoff)))


def for_runtime(state: Any) -> JmapService:
    """The app's service (made on first use; made again when the runtime was restarted)."""
    runtime: Runtime = state.runtime
    service: JmapService | None = getattr(state, "jmap_service", None)
    if service is None or service.runtime is not runtime or service.db is not runtime.db:
        service = JmapService(runtime)
        state.jmap_service = service
    return service
