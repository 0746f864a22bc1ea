"""The in-memory list index of an account's Emails, in exact step with the database.

A mail client's commonest request is a page of one mailbox, newest first. A
SQL top-N over 100,000 rows costs milliseconds and more on a busy machine; a
sorted list per mailbox answers it by slicing. This module keeps, per account:

- each Email's sort key (receivedAt, id), thread and mailboxes;
- per mailbox (and for the whole account) the sorted keys of its Emails, and
  how many of each thread's Emails it holds (``collapseThreads`` totals);
- the index rows of recently read Emails (Email/get).

It is a cache of ``jmap_emails`` *at one Email state*: ``sync`` is called
inside a read snapshot and brings the cache to that snapshot's Email state by
re-reading exactly the Emails the change log says changed since the cached
state (every write to ``jmap_emails`` logs an Email change in its own
transaction), or everything when the log no longer reaches back that far. A
snapshot older than the cache is answered from SQL instead. So an answer from
here is the answer SQL would give in the same snapshot, with the same state.
"""

from __future__ import annotations

__all__ = ["AccountIndex", "Page"]

import bisect
import threading
from collections import Counter, OrderedDict
from datetime import datetime

import duckdb
import msgspec

from appliance.jmap.changes import AccountStates
from appliance.jmap.proto import MethodError
from appliance.store import jmap as jmap_store
from appliance.store.changes import changed_ids_between

ROW_CACHE = 20_000
"""Email rows kept per account (least recently read dropped first)."""

Key = tuple[datetime, str]


class _Entry(msgspec.Struct, frozen=True, gc=False):
    """One Email in the list index (not tracked by the garbage collector: 100,000 of them would make every
    full collection of the process a pause of their size; they hold no cycles)."""

    key: Key
    thread_id: str
    mailbox_ids: frozenset[str]


class Page(msgspec.Struct, frozen=True):
    ids: list[str]
    position: int
    total: int


class AccountIndex:
    """One account's list index; every method but ``sync`` expects ``lock`` held and ``sync`` to have said yes."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.lock = threading.Lock()
        self.epoch: str | None = None
        self.version: int | None = None
        self._entries: dict[str, _Entry] = {}
        self._lists: dict[str | None, list[Key]] = {}
        self._threads: dict[str | None, Counter[str]] = {}
        self._rows: OrderedDict[str, jmap_store.EmailRow] = OrderedDict()
        self._sets: dict[frozenset[str], frozenset[str]] = {}
        self._counts: tuple[tuple[str, int], dict[str, jmap_store.MailboxCounts]] | None = None

    # -- keeping in step ---------------------------------------------------------------------------

    def sync(self, con: duckdb.DuckDBPyConnection, states: AccountStates) -> bool:
        """Bring the cache to the snapshot's Email state; False when the snapshot is older than the cache."""
        head, floor = states.heads.get("Email", (0, 0))
        if self.epoch == states.epoch and self.version == head:
            return True
        if self.epoch != states.epoch or self.version is None or self.version < floor:
            self._load(con)
        elif self.version > head:
            return False
        else:
            changed = changed_ids_between(con, self.agent, "Email", self.version, head)
            self._refresh(con, changed)
        self.epoch, self.version = states.epoch, head
        return True

    def _load(self, con: duckdb.DuckDBPyConnection) -> None:
        self._entries.clear()
        self._lists.clear()
        self._threads.clear()
        self._rows.clear()
        everything: list[Key] = []
        for row in jmap_store.listed_emails(con, self.agent):
            thread_id = row.thread_id
            entry = _Entry((row.received_at, row.email_id), thread_id, self._intern(row.mailbox_ids))
            self._entries[row.email_id] = entry
            everything.append(entry.key)
            self._threads.setdefault(None, Counter())[thread_id] += 1
            for mailbox in entry.mailbox_ids:
                self._lists.setdefault(mailbox, []).append(entry.key)
                self._threads.setdefault(mailbox, Counter())[thread_id] += 1
        self._lists[None] = everything

    def _intern(self, mailbox_ids: list[str]) -> frozenset[str]:
        value = frozenset(mailbox_ids)
        return self._sets.setdefault(value, value)

    def _refresh(self, con: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
        if not ids:
            return
        for email_id in ids:
            self._remove(email_id)
            self._rows.pop(email_id, None)
        for row in jmap_store.listed_emails_among(con, self.agent, ids):
            entry = _Entry((row.received_at, row.email_id), row.thread_id, self._intern(row.mailbox_ids))
            self._entries[row.email_id] = entry
            for mailbox in (None, *entry.mailbox_ids):
                bisect.insort(self._lists.setdefault(mailbox, []), entry.key)
                self._threads.setdefault(mailbox, Counter())[row.thread_id] += 1

    def _remove(self, email_id: str) -> None:
        entry = self._entries.pop(email_id, None)
        if entry is None:
            return
        for mailbox in (None, *entry.mailbox_ids):
            keys = self._lists.get(mailbox, [])
            at = bisect.bisect_left(keys, entry.key)
            if at < len(keys) and keys[at] == entry.key:
                del keys[at]
            counter = self._threads.get(mailbox)
            if counter is not None:
                counter[entry.thread_id] -= 1
                if counter[entry.thread_id] <= 0:
                    del counter[entry.thread_id]

    def counts(self, con: duckdb.DuckDBPyConnection, states: AccountStates) -> dict[str, jmap_store.MailboxCounts]:
        """Mailbox counts (``jmap_store.mailbox_counts``) at the snapshot's Email state, computed once per state."""
        at = (states.epoch, states.heads.get("Email", (0, 0))[0])
        if self._counts is not None and self._counts[0] == at:
            return self._counts[1]
        counts = jmap_store.mailbox_counts(con, self.agent)
        self._counts = (at, counts)
        return counts

    # -- answering -----------------------------------------------------------------------------------

    def page(self, mailbox: str | None, *, ascending: bool, collapse: bool, position: int, anchor: str | None,
             anchor_offset: int, limit: int) -> Page:
        """Email/query for "in this mailbox (or all), by receivedAt" (then id), RFC 8620 5.5's windowing."""
        keys = self._lists.get(mailbox, [])
        if not collapse:
            total = len(keys)
            if anchor is not None:
                entry = self._entries.get(anchor)
                if entry is None or (mailbox is not None and mailbox not in entry.mailbox_ids):
                    raise MethodError("anchorNotFound", "the anchor is not in the results")
                at = bisect.bisect_left(keys, entry.key)
                position = max(0, (at if ascending else total - 1 - at) + anchor_offset)
            elif position < 0:
                position = max(0, total + position)
            if ascending:
                chosen = keys[position:position + limit]
            else:
                stop = total - position
                chosen = keys[max(0, stop - limit):max(0, stop)][::-1]
            return Page(ids=[k[1] for k in chosen], position=position, total=total)
        total = len(self._threads.get(mailbox, ()))
        if anchor is None and position >= 0:
            return Page(ids=self._representatives(keys, ascending, position + limit)[position:position + limit],
                        position=position, total=total)
        every = self._representatives(keys, ascending, None)
        if anchor is not None:
            if anchor not in every:
                raise MethodError("anchorNotFound", "the anchor is not in the results")
            position = max(0, every.index(anchor) + anchor_offset)
        else:
            position = max(0, total + position)
        return Page(ids=every[position:position + limit], position=position, total=total)

    def _representatives(self, keys: list[Key], ascending: bool, wanted: int | None) -> list[str]:
        """The first email of each thread, in order (``collapseThreads``), the first ``wanted`` of them."""
        seen: set[str] = set()
        out: list[str] = []
        for key in (keys if ascending else reversed(keys)):
            if wanted is not None and len(out) >= wanted:
                break
            thread = self._entries[key[1]].thread_id
            if thread not in seen:
                seen.add(thread)
                out.append(key[1])
        return out

    def spans(self, ids: list[str], gap: int = 4_096) -> list[jmap_store.Span]:
        """The account's ``ids`` in runs of nearby arrival (at most ``gap`` emails apart), each with its range."""
        everything = self._lists.get(None, [])
        keys = sorted(self._entries[i].key for i in ids if i in self._entries)
        runs: list[jmap_store.Span] = []
        last = -gap - 1
        for key in keys:
            at = bisect.bisect_left(everything, key)
            if runs and at - last <= gap:
                runs[-1][0].append(key[1])
                runs[-1] = (runs[-1][0], runs[-1][1], key[0])
            else:
                runs.append(([key[1]], key[0], key[0]))
            last = at
        return runs

    def rows(self, con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, jmap_store.EmailRow]:
        """The index rows of those of ``ids`` that are the account's."""
        found: dict[str, jmap_store.EmailRow] = {}
        missing = []
        for email_id in ids:
            row = self._rows.get(email_id)
            if row is not None:
                self._rows.move_to_end(email_id)
                found[email_id] = row
            elif email_id in self._entries:
                missing.append(email_id)
        if missing:
            fetched = jmap_store.email_rows(con, self.agent, missing, self.spans(missing))
            found.update(fetched)
            self._rows.update(fetched)
            while len(self._rows) > ROW_CACHE:
                self._rows.popitem(last=False)
        return found
