"""Email/get, /changes, /query, /queryChanges, /set, /import (RFC 8621 4).

List properties come from the index row (no message is parsed for them);
``headers``, ``header:`` properties, part headers and body values read the
stored bytes by the offsets the index kept. With ``urn:appliance:jmap`` in
``using``, the ``urn:appliance:jmap:gate`` property is the gate's view of the
message: its decision (action, reason, rule), the capabilities granted to its
sender, the authentication results, and a fresh capability token for a reply.
"""

from __future__ import annotations

__all__ = ["BODY_PROPERTIES", "DEFAULT_PROPERTIES", "email_object", "gate_view"]

import asyncio
from datetime import datetime
from typing import Any

import duckdb

from appliance.errors import ApplianceError
from appliance.jmap import compose, local, mime
from appliance.jmap.core import (
    SetOutcome,
    apply_patch,
    args_of,
    changes_answer,
    check_set_size,
    check_state,
    compute_changes,
    get_ids,
    read,
    record_created,
    since_number,
    states_of,
    write,
)
from appliance.jmap.local import IndexEntry
from appliance.jmap.mime import PartInfo, Summary, utc_date
from appliance.jmap.proto import (
    GATE_PROPERTY,
    MAIL,
    VENDOR,
    ChangesArgs,
    EmailGetArgs,
    EmailImportArgs,
    EmailQueryArgs,
    EmailQueryChangesArgs,
    MethodError,
    SetArgs,
    SetError,
    is_id,
)
from appliance.jmap.query import compile_query, query_changes, run_query, valid_keyword
from appliance.jmap.router import Call, method
from appliance.mail import ReadingLimits, read_message
from appliance.store import jmap as jmap_store
from appliance.store.audit import DecisionView, decision_views
from appliance.store.database import Batch
from appliance.store.jmap import EmailRow

METADATA = ["id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt"]
CONVENIENCE = ["messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
               "sentAt"]
BODY = ["bodyStructure", "bodyValues", "textBody", "htmlBody", "attachments", "hasAttachment", "preview"]
DEFAULT_PROPERTIES = [*METADATA, *CONVENIENCE, "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody",
                      "attachments"]
KNOWN = frozenset([*METADATA, *CONVENIENCE, *BODY, "headers"])
BODY_PROPERTIES = ["partId", "blobId", "size", "headers", "name", "type", "charset", "disposition", "cid",
                   "language", "location", "subParts"]
DEFAULT_BODY_PROPERTIES = ["partId", "blobId", "size", "name", "type", "charset", "disposition", "cid", "language",
                           "location"]
MAX_KEYWORDS = 100


def header_property(prop: str) -> tuple[str, str, bool] | None:
    """``header:{name}[:as{form}][:all]`` → (name, form, all); None when ``prop`` is not one."""
    try:
        return compose._header_property(prop)
    except compose.Invalid:
        return None


def _properties(requested: list[str] | None, using: frozenset[str]) -> list[str]:
    if requested is None:
        return DEFAULT_PROPERTIES
    bad = [p for p in requested if p not in KNOWN and not (p.startswith("header:") and header_property(p))
           and not (p == GATE_PROPERTY and VENDOR in using)]
    if bad:
        raise MethodError("invalidArguments", f"unknown properties: {', '.join(bad[:10])}")
    return list(dict.fromkeys(["id", *requested]))


def _body_properties(requested: list[str] | None) -> list[str]:
    if requested is None:
        return DEFAULT_BODY_PROPERTIES
    bad = [p for p in requested if p not in BODY_PROPERTIES and not (p.startswith("header:") and header_property(p))]
    if bad:
        raise MethodError("invalidArguments", f"unknown bodyProperties: {', '.join(bad[:10])}")
    return list(requested)


def _needs_raw(properties: list[str], body_properties: list[str], args: EmailGetArgs) -> bool:
    if "headers" in properties or any(p.startswith("header:") for p in properties):
        return True
    if "bodyValues" in properties and (args.fetch_text_body_values or args.fetch_html_body_values
                                       or args.fetch_all_body_values):
        return True
    parts = {"bodyStructure", "textBody", "htmlBody", "attachments"} & set(properties)
    return bool(parts) and any(p == "headers" or p.startswith("header:") for p in body_properties)


def _header_values(fields: list[mime.Field], prop: str) -> Any:
    parsed = header_property(prop)
    assert parsed is not None
    name, form, all_ = parsed
    key = name.lower()
    values = [mime.header_value(f.value, form) for f in fields if f.name.lower() == key]
    if all_:
        return values
    return values[-1] if values else None


def _part_object(email_id: str, part: PartInfo, props: list[str], raw: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = mime.part_fields(raw, part) if raw is not None and any(
        p == "headers" or p.startswith("header:") for p in props) else []
    for prop in props:
        if prop == "partId":
            out[prop] = part.part_id
        elif prop == "blobId":
            out[prop] = local.email_blob_id(email_id, part.part_id) if part.part_id else None
        elif prop == "size":
            out[prop] = part.size
        elif prop == "headers":
            out[prop] = [{"name": f.name, "value": mime.header_value(f.value, "Raw")} for f in fields]
        elif prop == "subParts":
            out[prop] = None if part.sub_parts is None else [
                _part_object(email_id, sub, props, raw) for sub in part.sub_parts]
        elif prop.startswith("header:"):
            out[prop] = _header_values(fields, prop)
        else:
            out[prop] = getattr(part, prop)
    return out


def email_object(row: EmailRow, properties: list[str], body_properties: list[str], args: EmailGetArgs,
                 raw: bytes | None, gate: dict[str, Any] | None) -> dict[str, Any]:
    """One Email with the properties asked for (``raw`` when ``_needs_raw`` said so)."""
    summary: Summary | None = None
    out: dict[str, Any] = {}
    for prop in properties:
        if prop == "id":
            out[prop] = row.email_id
        elif prop == "blobId":
            out[prop] = local.email_blob_id(row.email_id)
        elif prop == "threadId":
            out[prop] = row.thread_id
        elif prop == "mailboxIds":
            out[prop] = dict.fromkeys(row.mailbox_ids, True)
        elif prop == "keywords":
            out[prop] = dict.fromkeys(row.keywords, True)
        elif prop == "size":
            out[prop] = row.size
        elif prop == "receivedAt":
            out[prop] = utc_date(row.received_at)
        elif prop == "hasAttachment":
            out[prop] = row.has_attachment
        elif prop == "preview":
            out[prop] = row.preview
        elif prop == GATE_PROPERTY:
            out[prop] = gate
        else:
            summary = summary or local.summary_of(row)
            if prop in CONVENIENCE:
                out[prop] = summary.headers.get(prop)
            elif prop == "headers":
                fields = mime.part_fields(raw, summary.structure) if raw is not None else []
                out[prop] = [{"name": f.name, "value": mime.header_value(f.value, "Raw")} for f in fields]
            elif prop.startswith("header:"):
                out[prop] = _header_values(mime.part_fields(raw, summary.structure) if raw is not None else [], prop)
            elif prop == "bodyStructure":
                out[prop] = _part_object(row.email_id, summary.structure, [*body_properties, "subParts"]
                                         if "subParts" not in body_properties else body_properties, raw)
            elif prop in ("textBody", "htmlBody", "attachments"):
                ids = {"textBody": summary.text_body, "htmlBody": summary.html_body,
                       "attachments": summary.attachments}[prop]
                out[prop] = [_part_object(row.email_id, part, body_properties, raw)
                             for part in (summary.part(i) for i in ids) if part is not None]
            elif prop == "bodyValues":
                out[prop] = _body_values(summary, args, raw)
    return out


def _body_values(summary: Summary, args: EmailGetArgs, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    wanted: list[str] = []
    if args.fetch_all_body_values:
        wanted = [p.part_id for p in mime.leaves(summary.structure) if p.part_id and p.type.startswith("text/")]
    else:
        if args.fetch_text_body_values:
            wanted += summary.text_body
        if args.fetch_html_body_values:
            wanted += summary.html_body
    out: dict[str, Any] = {}
    for part_id in dict.fromkeys(wanted):
        part = summary.part(part_id)
        if part is not None and part.type.startswith("text/"):
            out[part_id] = mime.body_value(raw, part, args.max_body_value_bytes)
    return out


def _gate_views(call: Call, con: duckdb.DuckDBPyConnection, agent: str, rows: list[EmailRow]
                ) -> dict[str, dict[str, Any] | None]:
    decision_ids = [r.decision_id for r in rows if r.decision_id]
    if not decision_ids:
        return {}
    by_id = {d.decision_id: d for d in decision_views(con, agent, decision_ids)}
    tokens = call.service.tokens()
    views: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        d = by_id.get(row.decision_id or "")
        if d is None:
            views[row.email_id] = None
            continue
        token = None
        if tokens is not None and d.action == "accept" and row.source == "store" and d.intake != "outbound":
            token = tokens.issue(agent=agent, thread_id=row.thread_id, decision_id=str(d.decision_id),
                                 capabilities=list(d.capabilities or []), email_id=row.email_id)
        views[row.email_id] = gate_view(d, token)
    return views


def gate_view(d: DecisionView, token: str | None) -> dict[str, Any]:
    """The ``urn:appliance:jmap:gate`` property of an Email: the gate's decision on it, and a capability token
    when the caller may act on it (the same shape served locally and through the Stalwart proxy)."""
    return {"decisionId": d.decision_id, "action": d.action, "reason": d.reason, "rule": d.rule,
            "capabilities": list(d.capabilities or []),
            "authResults": {"spf": d.spf, "dkim": d.dkim, "dmarc": d.dmarc},
            "decidedAt": utc_date(d.ts) if d.ts is not None else None,
            "intake": d.intake, "capabilityToken": token}


@method("Email/get", MAIL)
async def email_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(EmailGetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.ids)
    properties = _properties(args.properties, call.using)
    body_properties = _body_properties(args.body_properties)
    needs_raw = _needs_raw(properties, body_properties, args)
    gate = GATE_PROPERTY in properties
    limit = call.service.limits.max_objects_in_get

    index = call.service.index(agent)

    def work(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, EmailRow], dict[str, bytes], dict[str, Any]]:
        states = states_of(con, agent)
        state = states.state("Email")
        if ids is None and jmap_store.email_count(con, agent) > limit:
            raise MethodError("requestTooLarge", f"the account has more than {limit} emails: give ids")
        rows = None
        if ids is not None:
            with index.lock:
                if index.sync(con, states):
                    rows = index.rows(con, ids)
        if rows is None:
            rows = jmap_store.email_rows(con, agent, ids)
        raws = local.raws(con, agent, list(rows.values())) if needs_raw and rows else {}
        views = _gate_views(call, con, agent, list(rows.values())) if gate else {}
        return state, rows, raws, views

    state, rows, raws, views = await read(call, work)
    order = ids if ids is not None else sorted(rows)

    def build() -> list[dict[str, Any]]:
        return [email_object(rows[i], properties, body_properties, args, raws.get(i), views.get(i))
                for i in order if i in rows]

    found = await asyncio.to_thread(build) if needs_raw else build()
    return {"accountId": args.account_id, "state": state, "list": found,
            "notFound": [i for i in (ids or []) if i not in rows]}


@method("Email/changes", MAIL)
async def email_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(ChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        states, found = compute_changes(con, agent, "Email", args.since_state,
                                        lambda ids: jmap_store.existing_emails(con, agent, ids), args.max_changes)
        return changes_answer(args.account_id, args.since_state, states, found)

    return await read(call, work)


def _mailbox_filter_ids(call: Call, node: Any) -> Any:
    """Creation references (``#x``) in inMailbox / inMailboxOtherThan resolved."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "inMailbox" and isinstance(value, str):
                out[key] = call.resolve(value) or value
            elif key == "inMailboxOtherThan" and isinstance(value, list):
                out[key] = [call.resolve(v) or v if isinstance(v, str) else v for v in value]
            elif key == "conditions" and isinstance(value, list):
                out[key] = [_mailbox_filter_ids(call, c) for c in value]
            else:
                out[key] = value
        return out
    return node


def _listing(filter_: dict[str, Any] | None, args: EmailQueryArgs) -> tuple[str | None, bool] | None:
    """(mailbox or None, ascending) when the query is a plain listing the list index answers; else None."""
    if filter_ is not None and (set(filter_) != {"inMailbox"} or not isinstance(filter_["inMailbox"], str)):
        return None
    sort = args.sort or []
    if len(sort) > 1 or (sort and sort[0].property != "receivedAt"):
        return None
    if sort and sort[0].collation not in (None, "i;ascii-casemap", "i;unicode-casemap", "i;ascii-numeric"):
        return None
    return (filter_["inMailbox"] if filter_ else None), (sort[0].is_ascending if sort else False)


@method("Email/query", MAIL)
async def email_query(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(EmailQueryArgs, arguments)
    agent = await call.agent(args.account_id)
    resolved = _mailbox_filter_ids(call, args.filter)
    query = compile_query(resolved, args.sort, collapse=args.collapse_threads)
    cap = call.service.max_query_limit
    limit = cap if args.limit is None or args.limit > cap else args.limit

    fast = _listing(resolved, args)
    index = call.service.index(agent)

    def work(con: duckdb.DuckDBPyConnection) -> tuple[str, Any]:
        states = states_of(con, agent)
        if fast is not None:
            with index.lock:
                if index.sync(con, states):
                    mailbox, ascending = fast
                    return states.state("Email"), index.page(
                        mailbox, ascending=ascending, collapse=args.collapse_threads, position=args.position,
                        anchor=args.anchor, anchor_offset=args.anchor_offset, limit=limit)
        return states.state("Email"), run_query(
            con, agent, query, position=args.position, anchor=args.anchor, anchor_offset=args.anchor_offset,
            limit=limit, calculate_total=args.calculate_total)

    state, result = await read(call, work)
    answer: dict[str, Any] = {"accountId": args.account_id, "queryState": state, "canCalculateChanges": True,
                              "position": result.position, "ids": result.ids}
    if args.calculate_total:
        answer["total"] = result.total
    if limit != args.limit:
        answer["limit"] = limit
    return answer


@method("Email/queryChanges", MAIL)
async def email_query_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(EmailQueryChangesArgs, arguments)
    agent = await call.agent(args.account_id)
    query = compile_query(_mailbox_filter_ids(call, args.filter), args.sort, collapse=args.collapse_threads)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        states = states_of(con, agent)
        since = since_number(states, args.since_query_state)
        _, floor = states.heads["Email"]
        if since < floor or since > states.counter:
            raise MethodError("cannotCalculateChanges", "changes since this state are no longer known")
        found = query_changes(con, agent, query, since, max_changes=args.max_changes,
                              calculate_total=args.calculate_total)
        answer: dict[str, Any] = {
            "accountId": args.account_id, "oldQueryState": args.since_query_state,
            "newQueryState": states.state("Email"), "removed": found.removed,
            "added": [{"id": i, "index": n} for i, n in found.added]}
        if args.calculate_total:
            answer["total"] = found.total
        return answer

    return await read(call, work)


# -- set and import ------------------------------------------------------------------------------


def _keywords(value: Any) -> list[str] | None:
    """A keywords object's keywords, lowercased; None when it is not a valid one."""
    if not isinstance(value, dict) or len(value) > MAX_KEYWORDS:
        return None
    if not all(v is True and valid_keyword(k) for k, v in value.items()):
        return None
    return sorted({k.lower() for k in value})


def _mailbox_ids(value: Any, resolve: Any, known: set[str]) -> list[str] | None:
    if not isinstance(value, dict) or not value or not all(v is True for v in value.values()):
        return None
    ids = [resolve(k) for k in value]
    if any(i is None or i not in known for i in ids):
        return None
    return sorted(set(ids))


class _Prepared:
    """A creation whose bytes were made (and read) before the write: its row, or its SetError."""

    def __init__(self, raw: bytes | None = None, summary: Summary | None = None, received_at: datetime | None = None,
                 error: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self.summary = summary
        self.received_at = received_at
        self.error = error


def _prepare_create(props: dict[str, Any], blobs: dict[str, tuple[bytes, str]], hostname: str,
                    now: float) -> _Prepared:
    try:
        raw = compose.compose(props, blobs=blobs.get, hostname=hostname, now=now)
        when = compose.received_at(props, now)
    except compose.Invalid as exc:
        return _Prepared(error=SetError(exc.type, exc.description, properties=exc.properties))
    return _Prepared(raw=raw, summary=mime.summarize(raw), received_at=when)


def _prepare_import(raw: bytes | None, received_at: str | None, now: float) -> _Prepared:
    if raw is None:
        return _Prepared(error=SetError("blobNotFound", "no such blob"))
    try:
        message = read_message(raw, ReadingLimits())
    except ApplianceError as exc:
        return _Prepared(error=SetError("invalidEmail", str(exc)))
    try:
        when = compose.received_at({"receivedAt": received_at}, now)
    except compose.Invalid as exc:
        return _Prepared(error=SetError("invalidProperties", exc.description, properties=["receivedAt"]))
    return _Prepared(raw=message.data, summary=mime.summarize(message.data), received_at=when)


def _thread_for(con: duckdb.DuckDBPyConnection, agent: str, summary: Summary) -> str:
    refs = [f"<{i}>" for i in [*(summary.headers.get("references") or []), *(summary.headers.get("inReplyTo") or [])]]
    return jmap_store.thread_of_references(con, agent, refs) or local.new_id("T")


def _insert_local(batch: Batch, agent: str, prepared: _Prepared, mailbox_ids: list[str], keywords: list[str],
                  tracker: local.EmailTracker) -> dict[str, Any]:
    assert prepared.raw is not None and prepared.summary is not None and prepared.received_at is not None
    con = batch.con
    email_id = local.new_id("k")
    thread_id = _thread_for(con, agent, prepared.summary)
    tracker.before([email_id], threads=[thread_id])
    jmap_store.save_local(batch, agent, email_id, prepared.raw)
    local.insert_emails(batch, [IndexEntry(
        email_id=email_id, agent=agent, source="local", thread_id=thread_id, mailbox_ids=mailbox_ids,
        keywords=keywords, received_at=prepared.received_at, size=len(prepared.raw), decision_id=None,
        summary=prepared.summary)])
    batch.flush()
    return {"id": email_id, "blobId": local.email_blob_id(email_id), "threadId": thread_id,
            "size": len(prepared.raw)}


def _email_set(batch: Batch, agent: str, args: SetArgs, created_ids: dict[str, str],
               prepared: dict[str, _Prepared]) -> SetOutcome:
    con = batch.con
    states = states_of(con, agent)
    check_state(states, "Email", args.if_in_state)
    outcome = SetOutcome(old_state=states.state("Email"))
    known = {m.id for m in jmap_store.mailboxes(con, agent)}
    ids = dict(created_ids)

    def resolve(value: str) -> str | None:
        return ids.get(value[1:]) if value.startswith("#") else value

    tracker = local.EmailTracker(con, agent)
    for creation_id, props in (args.create or {}).items():
        ready = prepared[creation_id]
        if ready.error is not None:
            outcome.not_created[creation_id] = ready.error
            continue
        mailbox_ids = _mailbox_ids(props.get("mailboxIds"), resolve, known)
        if mailbox_ids is None:
            outcome.not_created[creation_id] = SetError("invalidProperties", "mailboxIds: at least one mailbox of "
                                                        "this account", properties=["mailboxIds"])
            continue
        keywords = _keywords(props.get("keywords", {}))
        if keywords is None:
            outcome.not_created[creation_id] = SetError("invalidProperties", "keywords: a map of keyword to true",
                                                        properties=["keywords"])
            continue
        created = _insert_local(batch, agent, ready, mailbox_ids, keywords, tracker)
        outcome.created[creation_id] = created
        ids[creation_id] = created["id"]
    updates: dict[str, tuple[list[str], list[str]]] = {}
    wanted = [resolve(i) or i for i in (args.update or {})]
    rows = jmap_store.email_rows(con, agent, wanted) if wanted else {}
    current = {i: (list(r.mailbox_ids), list(r.keywords)) for i, r in rows.items()}
    for raw_id, patch in (args.update or {}).items():
        email_id = resolve(raw_id) or raw_id
        if email_id not in current:
            outcome.not_updated[raw_id] = SetError("notFound")
            continue
        mailboxes_, keywords_ = updates.get(email_id, current[email_id])
        try:
            patched, immutable = apply_patch({"mailboxIds": dict.fromkeys(mailboxes_, True),
                                              "keywords": dict.fromkeys(keywords_, True)}, patch,
                                             {"mailboxIds", "keywords"})
        except ValueError as exc:
            outcome.not_updated[raw_id] = SetError("invalidPatch", str(exc))
            continue
        if immutable:
            outcome.not_updated[raw_id] = SetError("invalidProperties", "only mailboxIds and keywords change",
                                                   properties=immutable)
            continue
        new_mailboxes = _mailbox_ids(patched["mailboxIds"], resolve, known)
        new_keywords = _keywords({k.lower(): v for k, v in patched["keywords"].items()}
                                 if isinstance(patched["keywords"], dict) else None)
        bad = [p for p, v in (("mailboxIds", new_mailboxes), ("keywords", new_keywords)) if v is None]
        if bad:
            outcome.not_updated[raw_id] = SetError("invalidProperties", properties=bad)
            continue
        assert new_mailboxes is not None and new_keywords is not None
        updates[email_id] = (new_mailboxes, new_keywords)
        outcome.updated[email_id] = None
    if updates:
        tracker.before(list(updates))
        jmap_store.set_email_state(con, agent, updates)
    destroy = []
    for raw_id in args.destroy or []:
        email_id = resolve(raw_id) or raw_id
        if email_id in destroy or not jmap_store.existing_emails(con, agent, [email_id]):
            outcome.not_destroyed[raw_id] = SetError("notFound")
            continue
        destroy.append(email_id)
    if destroy:
        tracker.before(destroy)
        local.delete_emails(con, agent, destroy)
        outcome.destroyed = destroy
    batch.flush()
    tracker.finish()
    outcome.new_state = states_of(con, agent).state("Email")
    return outcome


async def _blobs(call: Call, agent: str, blob_ids: list[str]) -> dict[str, tuple[bytes, str]]:
    if not blob_ids:
        return {}

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[bytes, str]]:
        out = {}
        for blob_id in dict.fromkeys(blob_ids):
            found = local.blob_data(con, agent, blob_id)
            if found is not None:
                out[blob_id] = found
        return out

    return await read(call, work)


@method("Email/set", MAIL)
async def email_set(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(SetArgs, arguments)
    agent = await call.agent(args.account_id)
    check_set_size(call, args.create, args.update, args.destroy)
    creates = args.create or {}
    wanted = [b for props in creates.values() if isinstance(props, dict) for b in compose.needed_blobs(props)]
    blobs = await _blobs(call, agent, wanted)
    now = call.service.now
    prepared: dict[str, _Prepared] = {}
    for creation_id, props in creates.items():
        if not is_id(creation_id) or not isinstance(props, dict):
            prepared[creation_id] = _Prepared(error=SetError("invalidProperties", "not a creation"))
            continue
        prepared[creation_id] = await asyncio.to_thread(_prepare_create, props, blobs, call.service.hostname, now)
    created_ids = dict(call.created_ids)
    outcome = await write(call, lambda batch: _email_set(batch, agent, args, created_ids, prepared))
    record_created(call, outcome)
    return outcome.answer(args.account_id)


def _email_import(batch: Batch, agent: str, args: EmailImportArgs, created_ids: dict[str, str],
                  prepared: dict[str, _Prepared]) -> SetOutcome:
    con = batch.con
    states = states_of(con, agent)
    check_state(states, "Email", args.if_in_state)
    outcome = SetOutcome(old_state=states.state("Email"))
    known = {m.id for m in jmap_store.mailboxes(con, agent)}
    tracker = local.EmailTracker(con, agent)

    def resolve(value: str) -> str | None:
        return created_ids.get(value[1:]) if value.startswith("#") else value

    for creation_id, spec in args.emails.items():
        ready = prepared[creation_id]
        if ready.error is not None:
            outcome.not_created[creation_id] = ready.error
            continue
        mailbox_ids = _mailbox_ids(spec.mailbox_ids, resolve, known)
        keywords = _keywords(spec.keywords)
        bad = [p for p, v in (("mailboxIds", mailbox_ids), ("keywords", keywords)) if v is None]
        if bad:
            outcome.not_created[creation_id] = SetError("invalidProperties", properties=bad)
            continue
        assert mailbox_ids is not None and keywords is not None
        outcome.created[creation_id] = _insert_local(batch, agent, ready, mailbox_ids, keywords, tracker)
    tracker.finish()
    outcome.new_state = states_of(con, agent).state("Email")
    return outcome


@method("Email/import", MAIL)
async def email_import(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(EmailImportArgs, arguments)
    agent = await call.agent(args.account_id)
    if len(args.emails) > call.service.limits.max_objects_in_set:
        raise MethodError("requestTooLarge", f"more than {call.service.limits.max_objects_in_set} emails")
    blobs = await _blobs(call, agent, [e.blob_id for e in args.emails.values()])
    now = call.service.now
    prepared = {}
    for creation_id, spec in args.emails.items():
        found = blobs.get(spec.blob_id)
        prepared[creation_id] = await asyncio.to_thread(_prepare_import, found[0] if found else None,
                                                        spec.received_at, now)
    created_ids = dict(call.created_ids)
    outcome = await write(call, lambda batch: _email_import(batch, agent, args, created_ids, prepared))
    record_created(call, outcome)
    answer = outcome.answer(args.account_id)
    return {k: answer[k] for k in ("accountId", "oldState", "newState", "created", "notCreated")}

