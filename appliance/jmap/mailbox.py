"""Mailbox/get, /changes, /query, /queryChanges, /set (RFC 8621 2).

Every account has the role mailboxes inbox, drafts, sent, archive and trash
(their ids are their roles; they can be renamed and reordered but not
destroyed or given another role) and any an agent makes, nested up to
``MAX_DEPTH``. Quarantined mail is in no mailbox: it is not the agent's.
"""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "MAX_NAME", "mailbox_object"]

import functools
from typing import Any

import duckdb

from appliance.jmap import changes, local
from appliance.jmap.changes import Change
from appliance.jmap.core import (
    SetOutcome,
    apply_patch,
    args_of,
    changes_answer,
    check_set_size,
    check_state,
    compute_changes,
    get_ids,
    properties_of,
    read,
    record_created,
    since_number,
    states_of,
    write,
)
from appliance.jmap.proto import (
    MAIL,
    ChangesArgs,
    Comparator,
    GetArgs,
    MailboxQueryArgs,
    MailboxQueryChangesArgs,
    MailboxSetArgs,
    MethodError,
    SetError,
    is_id,
)
from appliance.jmap.router import Call, method
from appliance.store import jmap as jmap_store
from appliance.store.changes import log_threads_since
from appliance.store.database import Batch
from appliance.store.jmap import MailboxCounts, MailboxRow

MAX_DEPTH = 10
MAX_NAME = 255
"""Octets of a mailbox name at most (maxSizeMailboxName)."""
ROLES = frozenset({"all", "archive", "drafts", "flagged", "important", "inbox", "junk", "sent", "subscribed",
                   "trash"})
"""IANA's JMAP mailbox roles (RFC 8621 10.5)."""
COUNTS = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
PROPERTIES = ["id", "name", "parentId", "role", "sortOrder", *COUNTS, "myRights", "isSubscribed"]
SETTABLE = {"name", "parentId", "role", "sortOrder", "isSubscribed"}
_NO_COUNTS = MailboxCounts(0, 0, 0, 0)
_FIXED = {r for r, _, _ in local.ROLES}


def _rights(row: MailboxRow) -> dict[str, bool]:
    fixed = row.id in _FIXED
    return {"mayReadItems": True, "mayAddItems": True, "mayRemoveItems": True, "maySetSeen": True,
            "maySetKeywords": True, "mayCreateChild": True, "mayRename": not fixed, "mayDelete": not fixed,
            "maySubmit": True}


def mailbox_object(row: MailboxRow, counts: MailboxCounts | None, properties: list[str]) -> dict[str, Any]:
    full: dict[str, Any] = {"id": row.id, "name": row.name, "parentId": row.parent_id, "role": row.role,
                            "sortOrder": row.sort_order, "myRights": _rights(row), "isSubscribed": row.is_subscribed}
    counts = counts or _NO_COUNTS
    full.update(totalEmails=counts.total_emails, unreadEmails=counts.unread_emails,
                totalThreads=counts.total_threads, unreadThreads=counts.unread_threads)
    return {p: full[p] for p in properties}


@method("Mailbox/get", MAIL)
async def mailbox_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(GetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.ids)
    properties = properties_of(args.properties, set(PROPERTIES), PROPERTIES)
    want_counts = bool(set(properties) & set(COUNTS))
    index = call.service.index(agent)

    def work(con: duckdb.DuckDBPyConnection) -> tuple[str, list[MailboxRow], dict[str, MailboxCounts]]:
        states = states_of(con, agent)
        counts: dict[str, MailboxCounts] = {}
        if want_counts:
            with index.lock:
                counts = index.counts(con, states)
        return states.state("Mailbox"), jmap_store.mailboxes(con, agent, ids), counts

    state, rows, counts = await read(call, work)
    found = {r.id for r in rows}
    return {"accountId": args.account_id, "state": state,
            "list": [mailbox_object(r, counts.get(r.id), properties) for r in rows],
            "notFound": [i for i in (ids or []) if i not in found]}


@method("Mailbox/changes", MAIL)
async def mailbox_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(ChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        states, found = compute_changes(con, agent, "Mailbox", args.since_state,
                                        lambda ids: jmap_store.existing_mailboxes(con, agent, ids), args.max_changes)
        answer = changes_answer(args.account_id, args.since_state, states, found)
        answer["updatedProperties"] = COUNTS if found.counts_only else None
        return answer

    return await read(call, work)


# -- query ---------------------------------------------------------------------------------------


def _matches(row: MailboxRow, node: Any) -> bool:
    if not isinstance(node, dict):
        raise MethodError("invalidArguments", "filter: an object expected")
    if "operator" in node:
        operator, conditions = node.get("operator"), node.get("conditions")
        if operator not in ("AND", "OR", "NOT") or not isinstance(conditions, list):
            raise MethodError("invalidArguments", "filter: an operator is AND, OR or NOT with a conditions list")
        results = [_matches(row, c) for c in conditions]
        return all(results) if operator == "AND" else any(results) if operator == "OR" else not any(results)
    for name, value in node.items():
        if name == "parentId":
            if value is not None and not isinstance(value, str):
                raise MethodError("invalidArguments", "filter parentId: an id or null")
            if row.parent_id != value:
                return False
        elif name == "name":
            if not isinstance(value, str):
                raise MethodError("invalidArguments", "filter name: a string")
            if value.casefold() not in row.name.casefold():
                return False
        elif name == "role":
            if value is not None and not isinstance(value, str):
                raise MethodError("invalidArguments", "filter role: a string or null")
            if row.role != value:
                return False
        elif name in ("hasAnyRole", "isSubscribed"):
            if not isinstance(value, bool):
                raise MethodError("invalidArguments", f"filter {name}: a boolean")
            if (row.role is not None if name == "hasAnyRole" else row.is_subscribed) != value:
                return False
        else:
            raise MethodError("unsupportedFilter", f"filter condition {name!r} is not supported")
    return True


def _compare(sort: list[Comparator]) -> Any:
    for comparator in sort:
        if comparator.property not in ("sortOrder", "name"):
            raise MethodError("unsupportedSort", f"sort by {comparator.property!r} is not supported")

    def compare(a: MailboxRow, b: MailboxRow) -> int:
        for comparator in sort:
            left: Any = a.sort_order if comparator.property == "sortOrder" else a.name.casefold()
            right: Any = b.sort_order if comparator.property == "sortOrder" else b.name.casefold()
            if left != right:
                result = -1 if left < right else 1
                return result if comparator.is_ascending else -result
        return -1 if a.id < b.id else (1 if a.id > b.id else 0)

    return functools.cmp_to_key(compare)


def _results(rows: list[MailboxRow], filter_: dict[str, Any] | None, sort: list[Comparator] | None,
             sort_as_tree: bool, filter_as_tree: bool) -> list[str]:
    key = _compare(sort or [Comparator(property="sortOrder"), Comparator(property="name")])
    matched = {r.id for r in rows if filter_ is None or _matches(r, filter_)}
    by_id = {r.id: r for r in rows}
    if filter_as_tree:
        def included(row: MailboxRow) -> bool:
            seen = set()
            while row.parent_id is not None and row.parent_id in by_id and row.id not in seen:
                seen.add(row.id)
                row = by_id[row.parent_id]
                if row.id not in matched:
                    return False
            return True
        matched = {i for i in matched if included(by_id[i])}
    if not sort_as_tree:
        return [r.id for r in sorted((by_id[i] for i in matched), key=key)]
    children: dict[str | None, list[MailboxRow]] = {}
    for row in rows:
        children.setdefault(row.parent_id if row.parent_id in by_id else None, []).append(row)
    ordered: list[str] = []

    def visit(parent: str | None, depth: int) -> None:
        for child in sorted(children.get(parent, []), key=key):
            if child.id in matched:
                ordered.append(child.id)
            if depth < MAX_DEPTH + 2:
                visit(child.id, depth + 1)

    visit(None, 0)
    return ordered


def _window(ids: list[str], args: MailboxQueryArgs) -> tuple[list[str], int]:
    position = args.position
    if args.anchor is not None:
        if args.anchor not in ids:
            raise MethodError("anchorNotFound", "the anchor is not in the results")
        position = max(0, ids.index(args.anchor) + args.anchor_offset)
    elif position < 0:
        position = max(0, len(ids) + position)
    end = len(ids) if args.limit is None else position + args.limit
    return ids[position:end], position


@method("Mailbox/query", MAIL)
async def mailbox_query(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(MailboxQueryArgs, arguments)
    agent = await call.agent(args.account_id)
    state, rows = await read(call, lambda con: (states_of(con, agent).state("Mailbox"),
                                                jmap_store.mailboxes(con, agent)))
    ids = _results(rows, args.filter, args.sort, args.sort_as_tree, args.filter_as_tree)
    window, position = _window(ids, args)
    answer: dict[str, Any] = {"accountId": args.account_id, "queryState": state, "canCalculateChanges": True,
                              "position": position, "ids": window}
    if args.calculate_total:
        answer["total"] = len(ids)
    return answer


@method("Mailbox/queryChanges", MAIL)
async def mailbox_query_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(MailboxQueryChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> tuple[changes.AccountStates, list[str], list[MailboxRow]]:
        states = states_of(con, agent)
        since = since_number(states, args.since_query_state)
        _, floor = states.heads["Mailbox"]
        if since < floor or since > states.counter:
            raise MethodError("cannotCalculateChanges", "changes since this state are no longer known")
        changed = changes.unique(c.id for c in log_threads_since(con, agent, "Mailbox", since))
        return states, changed, jmap_store.mailboxes(con, agent)

    states, changed, rows = await read(call, work)
    if args.max_changes is not None and len(changed) > args.max_changes:
        raise MethodError("tooManyChanges", f"more than {args.max_changes} changes")
    ids = _results(rows, args.filter, args.sort, args.sort_as_tree, args.filter_as_tree)
    index = {i: n for n, i in enumerate(ids)}
    answer: dict[str, Any] = {
        "accountId": args.account_id, "oldQueryState": args.since_query_state,
        "newQueryState": states.state("Mailbox"), "removed": changed,
        "added": sorted(({"id": i, "index": index[i]} for i in changed if i in index), key=lambda a: a["index"])}
    if args.calculate_total:
        answer["total"] = len(ids)
    return answer


# -- set -----------------------------------------------------------------------------------------


class _Mailboxes:
    """The account's mailboxes during one Mailbox/set, changes applied as they are validated."""

    def __init__(self, con: duckdb.DuckDBPyConnection, agent: str, created_ids: dict[str, str]) -> None:
        self.con = con
        self.agent = agent
        self.rows = {r.id: r for r in jmap_store.mailboxes(con, agent)}
        self.created_ids = created_ids

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("#"):
            return self.created_ids.get(value[1:], value)
        return value

    def problems(self, row: MailboxRow, before: MailboxRow | None) -> list[str]:
        bad: list[str] = []
        if not isinstance(row.name, str) or not row.name.strip() or len(row.name.encode()) > MAX_NAME or any(
                ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in row.name):
            bad.append("name")
        elif any(o.id != row.id and o.parent_id == row.parent_id and o.name == row.name for o in self.rows.values()):
            bad.append("name")  # RFC 8621 2: siblings have distinct names
        if row.parent_id is not None and (not isinstance(row.parent_id, str) or row.parent_id not in self.rows
                                          or self._depth(row) is None):
            bad.append("parentId")
        if row.role is not None and (not isinstance(row.role, str) or row.role not in ROLES or any(
                o.id != row.id and o.role == row.role for o in self.rows.values())):
            bad.append("role")
        if before is not None and before.id in _FIXED and (row.role != before.role or row.parent_id is not None):
            bad.append("role" if row.role != before.role else "parentId")
        sort_order: Any = row.sort_order  # from the client's JSON: any type until checked
        if not isinstance(sort_order, int) or isinstance(sort_order, bool) or not 0 <= sort_order < 2**32:
            bad.append("sortOrder")
        subscribed: Any = row.is_subscribed
        if not isinstance(subscribed, bool):
            bad.append("isSubscribed")
        return sorted(set(bad))

    def _depth(self, row: MailboxRow) -> int | None:
        """Levels above ``row``; None for a cycle or a tree deeper than MAX_DEPTH."""
        depth, parent, seen = 0, row.parent_id, {row.id}
        while parent is not None:
            if parent in seen or parent not in self.rows:
                return None
            seen.add(parent)
            depth += 1
            if depth >= MAX_DEPTH:
                return None
            parent = self.rows[parent].parent_id
        return depth


def _row(props: dict[str, Any], base: MailboxRow) -> MailboxRow:
    return MailboxRow(id=base.id, name=props.get("name", base.name), parent_id=props.get("parentId", base.parent_id),
                      role=props.get("role", base.role), sort_order=props.get("sortOrder", base.sort_order),
                      is_subscribed=props.get("isSubscribed", base.is_subscribed))


def _mailbox_set(batch: Batch, agent: str, args: MailboxSetArgs, created_ids: dict[str, str]) -> SetOutcome:
    con = batch.con
    states = states_of(con, agent)
    check_state(states, "Mailbox", args.if_in_state)
    outcome = SetOutcome(old_state=states.state("Mailbox"))
    boxes = _Mailboxes(con, agent, dict(created_ids))
    log: list[Change] = []
    todo = list((args.create or {}).items())
    while todo:
        waiting = []
        for creation_id, props in todo:
            parent = props.get("parentId")
            if (isinstance(parent, str) and parent.startswith("#") and parent[1:] not in boxes.created_ids
                    and any(c == parent[1:] for c, _ in todo)):
                waiting.append((creation_id, props))
                continue
            outcome_for = _create(boxes, creation_id, props)
            if "id" in outcome_for:
                outcome.created[creation_id] = outcome_for
                boxes.created_ids[creation_id] = outcome_for["id"]
                log.append(Change("Mailbox", outcome_for["id"], "created"))
            else:
                outcome.not_created[creation_id] = outcome_for
        if len(waiting) == len(todo):  # references that cannot be satisfied (a cycle)
            for creation_id, _ in waiting:
                outcome.not_created[creation_id] = SetError("invalidProperties", "parentId names a creation that "
                                                            "cannot be made first", properties=["parentId"])
            break
        todo = waiting
    for raw_id, patch in (args.update or {}).items():
        mailbox_id = boxes.resolve(raw_id)
        before = boxes.rows.get(mailbox_id)
        if before is None:
            outcome.not_updated[raw_id] = SetError("notFound")
            continue
        current = {"name": before.name, "parentId": before.parent_id, "role": before.role,
                   "sortOrder": before.sort_order, "isSubscribed": before.is_subscribed}
        try:
            patched, immutable = apply_patch(current, patch, SETTABLE)
        except ValueError as exc:
            outcome.not_updated[raw_id] = SetError("invalidPatch", str(exc))
            continue
        if immutable:
            outcome.not_updated[raw_id] = SetError("invalidProperties", "server-set or unknown", properties=immutable)
            continue
        patched["parentId"] = boxes.resolve(patched.get("parentId"))
        row = _row(patched, before)
        bad = boxes.problems(row, before)
        if bad:
            outcome.not_updated[raw_id] = SetError("invalidProperties", properties=bad)
            continue
        boxes.rows[row.id] = row
        jmap_store.update_mailbox(con, agent, row)
        outcome.updated[mailbox_id] = None
        if row != before:
            log.append(Change("Mailbox", row.id, "updated"))
    destroy = [boxes.resolve(i) for i in (args.destroy or [])]
    order = sorted(destroy, key=lambda i: -(boxes._depth(boxes.rows[i]) or 0) if i in boxes.rows else 0)
    tracker = local.EmailTracker(con, agent)
    for mailbox_id in order:
        raw_id = (args.destroy or [])[destroy.index(mailbox_id)]
        if mailbox_id not in boxes.rows:
            outcome.not_destroyed[raw_id] = SetError("notFound")
            continue
        if mailbox_id in _FIXED:
            outcome.not_destroyed[raw_id] = SetError("forbidden", "the role mailboxes cannot be destroyed")
            continue
        if any(r.parent_id == mailbox_id for r in boxes.rows.values()):
            outcome.not_destroyed[raw_id] = SetError("mailboxHasChild")
            continue
        members = jmap_store.mailbox_members(con, agent, mailbox_id)
        if members and not args.on_destroy_remove_emails:
            outcome.not_destroyed[raw_id] = SetError("mailboxHasEmail")
            continue
        if members:
            tracker.before([m.email_id for m in members])
            only_here = [m.email_id for m in members if m.mailbox_ids == [mailbox_id]]
            jmap_store.set_email_state(con, agent, {m.email_id: ([b for b in m.mailbox_ids if b != mailbox_id],
                                                                 m.keywords)
                                                    for m in members if m.mailbox_ids != [mailbox_id]})
            local.delete_emails(con, agent, only_here)
        jmap_store.delete_mailbox(con, agent, mailbox_id)
        del boxes.rows[mailbox_id]
        outcome.destroyed.append(mailbox_id)
        log.append(Change("Mailbox", mailbox_id, "destroyed"))
    tracker.finish()
    changes.log_changes(con, agent, log)
    outcome.new_state = states_of(con, agent).state("Mailbox")
    return outcome


def _create(boxes: _Mailboxes, creation_id: str, props: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(props) - SETTABLE)
    if unknown:
        return SetError("invalidProperties", "server-set or unknown", properties=unknown)
    if not is_id(creation_id):
        return SetError("invalidProperties", "a creation id is an Id")
    props = {**props, "parentId": boxes.resolve(props.get("parentId"))}
    base = MailboxRow(id=local.new_id("M"), name="", parent_id=None, role=None, sort_order=0, is_subscribed=True)
    row = _row(props, base)
    if "name" not in props:
        return SetError("invalidProperties", "name is required", properties=["name"])
    bad = boxes.problems(row, None)
    if bad:
        return SetError("invalidProperties", properties=bad)
    boxes.rows[row.id] = row
    jmap_store.insert_mailbox(boxes.con, boxes.agent, row)
    created = {"id": row.id, "totalEmails": 0, "unreadEmails": 0, "totalThreads": 0, "unreadThreads": 0,
               "myRights": _rights(row)}
    for prop, value in (("parentId", row.parent_id), ("role", row.role), ("sortOrder", row.sort_order),
                        ("isSubscribed", row.is_subscribed)):
        if prop not in props:
            created[prop] = value
    return created


@method("Mailbox/set", MAIL)
async def mailbox_set(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(MailboxSetArgs, arguments)
    agent = await call.agent(args.account_id)
    check_set_size(call, args.create, args.update, args.destroy)
    created_ids = dict(call.created_ids)
    outcome = await write(call, lambda batch: _mailbox_set(batch, agent, args, created_ids))
    record_created(call, outcome)
    return outcome.answer(args.account_id)
