"""EmailSubmission/get, /changes, /query, /set (RFC 8621 7): sending a draft through the Outbox.

A submission sends one of the agent's emails (a draft) through the same path
as ``POST /api/v1/messages``: ``Outbox.submit`` checks the capability token
(the ``urn:appliance:jmap:capabilityToken`` property, as the gate's view of
the replied message gives one), runs the outbound policy, composes, signs and
queues. The draft supplies the recipients (To, Cc), subject, text, HTML and
attachments; a draft whose In-Reply-To names a received message is a reply to
it (it goes to that message's verified sender, as every reply does). What the
Outbox refuses is a SetError: ``forbiddenToSend`` (token, policy),
``invalidRecipients``, ``rateLimit``, ``tooLarge``. The Outbox stores the
Sent copy itself; it appears in the Sent mailbox. ``onSuccessUpdateEmail`` and
``onSuccessDestroyEmail`` then act on the draft (an implicit Email/set,
answered under the same call id).

Submissions are final at once (``undoStatus: final``: no delayed send); each
recipient's ``deliveryStatus`` is read from the send queue.
"""

from __future__ import annotations

__all__ = ["PROPERTIES"]

import asyncio
from typing import Any

import duckdb
import msgspec

from appliance.jmap import changes, local, mime
from appliance.jmap.changes import Change
from appliance.jmap.core import (
    SetOutcome,
    args_of,
    changes_answer,
    check_set_size,
    check_state,
    compute_changes,
    get_ids,
    properties_of,
    read,
    since_number,
    states_of,
    write,
)
from appliance.jmap.identity import identity_id
from appliance.jmap.mime import utc_date
from appliance.jmap.proto import (
    SUBMISSION,
    TOKEN_PROPERTY,
    VENDOR,
    ChangesArgs,
    EmailSubmissionSetArgs,
    GetArgs,
    MethodError,
    QueryArgs,
    QueryChangesArgs,
    SetError,
    is_id,
)
from appliance.jmap.router import Call, method
from appliance.mail import html_to_text
from appliance.store import jmap as jmap_store
from appliance.store import messages
from appliance.store.changes import log_threads_since
from appliance.store.database import Batch, utc
from appliance.store.jmap import SubmissionRow

PROPERTIES = ["id", "identityId", "emailId", "threadId", "envelope", "sendAt", "undoStatus", "deliveryStatus",
              "dsnBlobIds", "mdnBlobIds"]
_CREATE = frozenset({"identityId", "emailId", "envelope", TOKEN_PROPERTY})


def _delivery(con: duckdb.DuckDBPyConnection, agent: str, row: SubmissionRow) -> dict[str, Any] | None:
    try:
        from appliance.outbound.service import sent_message
    except ImportError:  # pragma: no cover - an appliance without the send half
        return None
    sent = sent_message(con, row.sent_email_id, agent=agent)
    if sent is None:
        return None
    delivered = {"queued": "queued", "retrying": "queued", "sent": "yes", "bounced": "no"}
    return {r.address: {"smtpReply": f"{r.last_code} {r.last_detail or ''}".strip() if r.last_code else
                        "250 2.0.0 queued" if r.status == "queued" else (r.last_detail or ""),
                        "delivered": delivered.get(r.status, "unknown"), "displayed": "unknown"}
            for r in sent.recipients}


def _object(con: duckdb.DuckDBPyConnection, agent: str, row: SubmissionRow, properties: list[str]) -> dict[str, Any]:
    full: dict[str, Any] = {"id": row.id, "identityId": row.identity_id, "emailId": row.email_id,
                            "threadId": row.thread_id, "envelope": msgspec.json.decode(row.envelope),
                            "sendAt": utc_date(row.send_at), "undoStatus": "final", "dsnBlobIds": [],
                            "mdnBlobIds": []}
    if "deliveryStatus" in properties:
        full["deliveryStatus"] = _delivery(con, agent, row)
    return {p: full[p] for p in properties}


@method("EmailSubmission/get", SUBMISSION)
async def submission_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(GetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.ids)
    properties = properties_of(args.properties, set(PROPERTIES), PROPERTIES)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        rows = jmap_store.submissions(con, agent, ids)
        if ids is None and len(rows) > call.service.limits.max_objects_in_get:
            raise MethodError("requestTooLarge", "give ids")
        found = {r.id for r in rows}
        return {"accountId": args.account_id, "state": states_of(con, agent).state("EmailSubmission"),
                "list": [_object(con, agent, r, properties) for r in rows],
                "notFound": [i for i in (ids or []) if i not in found]}

    return await read(call, work)


@method("EmailSubmission/changes", SUBMISSION)
async def submission_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(ChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        def exists(ids: list[str]) -> set[str]:
            return {r.id for r in jmap_store.submissions(con, agent, ids)}

        states, found = compute_changes(con, agent, "EmailSubmission", args.since_state, exists, args.max_changes)
        return changes_answer(args.account_id, args.since_state, states, found)

    return await read(call, work)


def _matches(row: SubmissionRow, node: Any) -> bool:
    if not isinstance(node, dict):
        raise MethodError("invalidArguments", "filter: an object expected")
    if "operator" in node:
        results = [_matches(row, c) for c in node.get("conditions") or []]
        operator = node.get("operator")
        if operator not in ("AND", "OR", "NOT"):
            raise MethodError("invalidArguments", "filter: operator AND, OR or NOT")
        return all(results) if operator == "AND" else any(results) if operator == "OR" else not any(results)
    for name, value in node.items():
        if name in ("identityIds", "emailIds", "threadIds"):
            if not isinstance(value, list):
                raise MethodError("invalidArguments", f"filter {name}: a list of ids")
            have = {"identityIds": row.identity_id, "emailIds": row.email_id, "threadIds": row.thread_id}[name]
            if have not in value:
                return False
        elif name == "undoStatus":
            if value != "final":
                return False
        elif name in ("before", "after"):
            try:
                moment = mime.parse_utc(str(value))
            except ValueError:
                raise MethodError("invalidArguments", f"filter {name}: a UTCDate") from None
            if (row.send_at >= moment) if name == "before" else (row.send_at < moment):
                return False
        else:
            raise MethodError("unsupportedFilter", f"filter condition {name!r} is not supported")
    return True


def _sorted(rows: list[SubmissionRow], args: QueryArgs | QueryChangesArgs) -> list[str]:
    keys = {"emailId": lambda r: r.email_id, "threadId": lambda r: r.thread_id, "sentAt": lambda r: r.send_at}
    ordered = sorted(rows, key=lambda r: r.id)
    for comparator in reversed(args.sort or []):
        if comparator.property not in keys:
            raise MethodError("unsupportedSort", f"sort by {comparator.property!r} is not supported")
        ordered.sort(key=keys[comparator.property], reverse=not comparator.is_ascending)
    return [r.id for r in ordered if args.filter is None or _matches(r, args.filter)]


@method("EmailSubmission/query", SUBMISSION)
async def submission_query(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(QueryArgs, arguments)
    agent = await call.agent(args.account_id)
    state, rows = await read(call, lambda con: (states_of(con, agent).state("EmailSubmission"),
                                                jmap_store.submissions(con, agent, None)))
    ids = _sorted(rows, args)
    position = args.position
    if args.anchor is not None:
        if args.anchor not in ids:
            raise MethodError("anchorNotFound")
        position = max(0, ids.index(args.anchor) + args.anchor_offset)
    elif position < 0:
        position = max(0, len(ids) + position)
    window = ids[position:] if args.limit is None else ids[position:position + args.limit]
    answer: dict[str, Any] = {"accountId": args.account_id, "queryState": state, "canCalculateChanges": True,
                              "position": position, "ids": window}
    if args.calculate_total:
        answer["total"] = len(ids)
    return answer


@method("EmailSubmission/queryChanges", SUBMISSION)
async def submission_query_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(QueryChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> tuple[str, list[str], list[SubmissionRow]]:
        states = states_of(con, agent)
        since = since_number(states, args.since_query_state)
        if since < states.heads["EmailSubmission"][1] or since > states.counter:
            raise MethodError("cannotCalculateChanges")
        changed = changes.unique(c.id for c in log_threads_since(con, agent, "EmailSubmission", since))
        return states.state("EmailSubmission"), changed, jmap_store.submissions(con, agent, None)

    state, changed, rows = await read(call, work)
    if args.max_changes is not None and len(changed) > args.max_changes:
        raise MethodError("tooManyChanges")
    ids = _sorted(rows, args)
    index = {i: n for n, i in enumerate(ids)}
    answer: dict[str, Any] = {"accountId": args.account_id, "oldQueryState": args.since_query_state,
                              "newQueryState": state, "removed": changed,
                              "added": sorted(({"id": i, "index": index[i]} for i in changed if i in index),
                                              key=lambda a: a["index"])}
    if args.calculate_total:
        answer["total"] = len(ids)
    return answer


# -- set -----------------------------------------------------------------------------------------


class _Draft(msgspec.Struct, frozen=True, kw_only=True):
    email_id: str
    thread_id: str
    summary: mime.Summary
    raw: bytes
    parent_email_id: str | None
    parent_sender: str | None


def _draft(con: duckdb.DuckDBPyConnection, agent: str, email_id: str) -> _Draft | None:
    rows = jmap_store.email_rows(con, agent, [email_id])
    row = rows.get(email_id)
    raw = local.email_raw(con, agent, email_id) if row else None
    if row is None or raw is None:
        return None
    summary = local.summary_of(row)
    parent_id, parent_sender = None, None
    wanted = [f"<{i}>" for i in (summary.headers.get("inReplyTo") or [])]
    if wanted:
        indexed = jmap_store.emails_with_message_ids(con, agent, wanted)
        found = messages.newest_sender(con, agent, messages.INBOX, indexed) if indexed else None
        if found:
            parent_id, parent_sender = found.email_id, found.sender.lower()
    return _Draft(email_id=email_id, thread_id=row.thread_id, summary=summary, raw=raw, parent_email_id=parent_id,
                  parent_sender=parent_sender)


def _addresses(summary: mime.Summary, prop: str) -> list[str]:
    return [str(a["email"]).lower() for a in summary.headers.get(prop) or [] if isinstance(a, dict) and a.get("email")]


def _texts(draft: _Draft) -> tuple[str, str | None, list[mime.PartInfo]]:
    summary, raw = draft.summary, draft.raw
    text_parts = [p for p in (summary.part(i) for i in summary.text_body) if p is not None]
    html_parts = [p for p in (summary.part(i) for i in summary.html_body) if p is not None]
    text = "\n".join(mime.part_text(raw, p)[0] for p in text_parts if p.type == "text/plain")
    html = "\n".join(mime.part_text(raw, p)[0] for p in html_parts if p.type == "text/html") or None
    if not text and html:
        text = html_to_text(html)
    attachments = [p for p in (summary.part(i) for i in summary.attachments) if p is not None]
    return text.replace("\r\n", "\n"), html, attachments


class _Refusal(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("description", ""))
        self.error = error


def _refusal(status: int, reason: str, detail: str) -> dict[str, Any]:
    kind = {401: "forbiddenToSend", 403: "forbiddenToSend", 404: "notFound", 409: "forbiddenToSend",
            413: "tooLarge", 422: "invalidProperties", 429: "rateLimit"}.get(status, "invalidProperties")
    if reason in ("recipient_not_allowed", "too_many_recipients"):
        kind = "invalidRecipients" if reason == "recipient_not_allowed" else "tooManyRecipients"
    return SetError(kind, f"{reason}: {detail}")


async def _send(call: Call, agent: str, props: dict[str, Any]) -> tuple[_Draft, Any]:
    """Hand one submission to the Outbox; ``_Refusal`` carrying the SetError when it cannot go."""
    from appliance.outbound.model import BlobRef, SendRequest

    outbox = getattr(call.service.runtime, "outbox", None)
    if outbox is None:
        raise MethodError("serverUnavailable", "sending is not available: this appliance has no outbox")
    from appliance.outbound.blobs import new_blob, save_blob
    from appliance.outbound.service import Refused

    unknown = sorted(set(props) - _CREATE)
    if unknown or (TOKEN_PROPERTY in props and VENDOR not in call.using):
        raise _Refusal(SetError("invalidProperties", "unknown or server-set properties (the capability token "
                                "needs urn:appliance:jmap in using)", properties=unknown or [TOKEN_PROPERTY]))
    identity, email_ref = props.get("identityId"), props.get("emailId")
    if not isinstance(identity, str) or call.resolve(identity) != identity_id(agent):
        raise _Refusal(SetError("invalidProperties", "identityId: not an identity of this account",
                                properties=["identityId"]))
    email_id = call.resolve(email_ref) if isinstance(email_ref, str) else None
    draft = await read(call, lambda con: _draft(con, agent, email_id)) if email_id else None
    if draft is None:
        raise _Refusal(SetError("invalidProperties", "emailId: not an email of this account",
                                properties=["emailId"]))
    to, cc = _addresses(draft.summary, "to"), _addresses(draft.summary, "cc")
    token = props.get(TOKEN_PROPERTY)
    if not isinstance(token, str) or not token:
        raise _Refusal(SetError("forbiddenToSend", f"a capability token is required ({TOKEN_PROPERTY})"))
    envelope = props.get("envelope")
    if envelope is not None:
        mail_from = envelope.get("mailFrom", {}).get("email") if isinstance(envelope, dict) else None
        if not isinstance(mail_from, str) or mail_from.lower() != agent:
            raise _Refusal(SetError("forbiddenMailFrom", "the envelope sender is the agent's own address"))
        rcpt = {str(r.get("email", "")).lower() for r in envelope.get("rcptTo") or [] if isinstance(r, dict)}
        if rcpt != set(to) | set(cc) | set(_addresses(draft.summary, "bcc")):
            raise _Refusal(SetError("invalidRecipients", "the envelope's recipients are the message's own (To, Cc)"))
    kind = "reply" if draft.parent_email_id else "new"
    if kind == "reply":
        replied = {draft.parent_sender, *_addresses(draft.summary, "replyTo")}
        others = [a for a in to if a not in replied]
        if others:
            raise _Refusal(SetError("invalidRecipients", "a reply goes to the replied message's sender: name "
                                    f"{', '.join(others)} in Cc", invalidRecipients=others))
        to = []
    elif not to and not cc:
        raise _Refusal(SetError("noRecipients", "the draft has no To or Cc"))
    text, html, parts = await asyncio.to_thread(_texts, draft)
    now = call.service.now
    blobs = []
    for part in parts:
        data = mime.decoded_part(draft.raw, part)[0]
        blobs.append(new_blob(agent=agent, data=data, content_type=part.type, filename=part.name, now=now))
    if blobs:
        def save(con: duckdb.DuckDBPyConnection) -> None:
            for blob in blobs:
                save_blob(con, blob)

        await call.service.db.write(save)
    request = SendRequest(text=text, html=html, to=to, cc=cc, subject=draft.summary.headers.get("subject"),
                          attachments=[BlobRef(blob_id=b.blob_id, filename=b.filename) for b in blobs])
    try:
        result = await outbox.submit(agent, kind, draft.parent_email_id, request, token, None)
    except Refused as refused:
        raise _Refusal(_refusal(refused.status, refused.reason, refused.detail)) from None
    except msgspec.ValidationError as exc:
        raise _Refusal(SetError("invalidEmail", str(exc))) from None
    return draft, result


def _record(batch: Batch, agent: str, rows: list[SubmissionRow]) -> str:
    con = batch.con
    jmap_store.insert_submissions(con, agent, rows)
    changes.log_changes(con, agent, [Change("EmailSubmission", r.id, "created") for r in rows])
    return states_of(con, agent).state("EmailSubmission")


def _destroy(batch: Batch, agent: str, ids: list[str]) -> tuple[list[str], str]:
    con = batch.con
    found = [r.id for r in jmap_store.submissions(con, agent, ids)]
    if found:
        jmap_store.delete_submissions(con, agent, found)
        changes.log_changes(con, agent, [Change("EmailSubmission", i, "destroyed") for i in found])
    return found, states_of(con, agent).state("EmailSubmission")


@method("EmailSubmission/set", SUBMISSION)
async def submission_set(call: Call, arguments: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    args = args_of(EmailSubmissionSetArgs, arguments)
    agent = await call.agent(args.account_id)
    check_set_size(call, args.create, args.update, args.destroy)
    states = await read(call, lambda con: states_of(con, agent))
    check_state(states, "EmailSubmission", args.if_in_state)
    outcome = SetOutcome(old_state=states.state("EmailSubmission"), new_state=states.state("EmailSubmission"))
    made: list[SubmissionRow] = []
    for creation_id, props in (args.create or {}).items():
        if not is_id(creation_id) or not isinstance(props, dict):
            outcome.not_created[creation_id] = SetError("invalidProperties", "not a creation")
            continue
        try:
            draft, result = await _send(call, agent, props)
        except _Refusal as refusal:
            outcome.not_created[creation_id] = refusal.error
            continue
        envelope = {"mailFrom": {"email": agent, "parameters": None},
                    "rcptTo": [{"email": a, "parameters": None} for a in dict.fromkeys(
                        [*(_addresses(draft.summary, "to") if not draft.parent_email_id else [draft.parent_sender]),
                         *_addresses(draft.summary, "cc")]) if a]}
        row = SubmissionRow(id=local.new_id("S"), identity_id=identity_id(agent), email_id=draft.email_id,
                   sent_email_id=result.email_id, thread_id=result.thread_id, send_at=utc(),
                   envelope=msgspec.json.encode(envelope).decode())
        made.append(row)
        outcome.created[creation_id] = {"id": row.id, "threadId": row.thread_id, "undoStatus": "final",
                                        "sendAt": utc_date(row.send_at)}
        call.created_ids[creation_id] = row.id
    if made:
        outcome.new_state = await write(call, lambda batch: _record(batch, agent, made))
        await call.service.indexer.sync(full=True)  # the Sent copies, in the Sent mailbox now
    for raw_id in (args.update or {}):
        outcome.not_updated[raw_id] = SetError("cannotUnsend", "a submission is final once made")
    if args.destroy:
        wanted = [call.resolve(i) or i for i in args.destroy]
        destroyed, state = await write(call, lambda batch: _destroy(batch, agent, wanted))
        outcome.destroyed = destroyed
        outcome.new_state = state
        outcome.not_destroyed.update({raw: SetError("notFound") for raw, i in zip(args.destroy, wanted, strict=True)
                                      if i not in destroyed})
    answers: list[tuple[str, dict[str, Any]]] = [("EmailSubmission/set", outcome.answer(args.account_id))]
    follow = _follow_up(args, outcome, made)
    if follow:
        from appliance.jmap.email import email_set

        answer = await email_set(call, {"accountId": args.account_id, **follow})
        assert isinstance(answer, dict)
        answers.append(("Email/set", answer))
    return answers


def _follow_up(args: EmailSubmissionSetArgs, outcome: SetOutcome, made: list[SubmissionRow]) -> dict[str, Any]:
    """RFC 8621 7.5: onSuccessUpdateEmail / onSuccessDestroyEmail, as Email/set arguments."""
    by_ref = {f"#{c}": r for c, r in zip([c for c in outcome.created], made, strict=True)}
    by_ref.update({r.id: r for r in made})
    update = {by_ref[k].email_id: v for k, v in (args.on_success_update_email or {}).items() if k in by_ref}
    destroy = [by_ref[k].email_id for k in args.on_success_destroy_email or [] if k in by_ref]
    follow: dict[str, Any] = {}
    if update:
        follow["update"] = update
    if destroy:
        follow["destroy"] = destroy
    return follow
