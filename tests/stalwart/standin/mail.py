"""Mail JMAP (RFC 8620/8621) for user accounts: Mailbox, Email, Thread, Identity, uploads,
downloads and StateChange for push. EmailSubmission lives in submission.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import message
from app import App
from jmap import MAIL, SUBMISSION, Method, MethodError, Principal, require_capability
from mailstore import add_email, blob_of, store_blob

_DEFAULT_EMAIL_PROPERTIES = [
    "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId", "inReplyTo",
    "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "hasAttachment", "preview",
]
_ADDRESS_FIELDS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "replyTo": "Reply-To", "sender": "Sender"}
_ID_FIELDS = {"messageId": "Message-ID", "inReplyTo": "In-Reply-To", "references": "References"}


def _account(app: App, principal: Principal, args: dict[str, Any], name: str) -> str:
    """The accountId argument, which must be the caller's own account."""
    account_id = args.get("accountId")
    if account_id is None:
        account_id = principal.account_id
    if account_id != principal.account_id or account_id not in app.state.data["accounts"]:
        raise MethodError("accountNotFound", f"{name}: account {account_id!r} is not yours")
    return str(account_id)


def _state(app: App, account_id: str) -> str:
    return str(app.state.account_state(account_id))


def state_change(app: App, account_id: str, types: set[str] | None) -> dict[str, Any]:
    """The StateChange push object for one account (all types, or those asked for)."""
    state = _state(app, account_id)
    changed = {kind: state for kind in ("Email", "Mailbox", "Thread", "EmailDelivery")
               if types is None or kind in types}
    return {"@type": "StateChange", "changed": {account_id: changed}}


def upload(app: App, principal: Principal, account_id: str, content: bytes, content_type: str
           ) -> tuple[int, dict[str, Any]]:
    """POST /jmap/upload/{accountId}/."""
    if principal.account_id != account_id:
        return 403, {"type": "about:blank", "status": 403, "detail": f"account {account_id} is not yours"}
    return 201, store_blob(app, account_id, content, content_type)


def download(app: App, principal: Principal, account_id: str, blob_id: str) -> bytes | None:
    """GET /jmap/download/{accountId}/{blobId}/{name}."""
    if principal.account_id != account_id:
        return None
    return blob_of(app, account_id, blob_id)


# -- Mailbox


def _mailbox_view(app: App, mailbox: dict[str, Any]) -> dict[str, Any]:
    emails = [e for e in app.state.data["emails"].values() if mailbox["id"] in e["mailboxIds"]]
    unread = [e for e in emails if not e["keywords"].get("$seen")]
    return {
        "id": mailbox["id"], "name": mailbox["name"], "parentId": None, "role": mailbox["role"],
        "sortOrder": mailbox.get("sortOrder", 0), "totalEmails": len(emails), "unreadEmails": len(unread),
        "totalThreads": len(emails), "unreadThreads": len(unread), "isSubscribed": True,
        "myRights": {right: True for right in ("mayReadItems", "mayAddItems", "mayRemoveItems", "maySetSeen",
                                               "maySetKeywords", "mayCreateChild", "mayRename", "mayDelete",
                                               "maySubmit")},
    }


def mailbox_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Mailbox/get."""
    require_capability(app, "Mailbox/get", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Mailbox/get")
        own = {k: m for k, m in app.state.data["mailboxes"].items() if m["accountId"] == account_id}
        ids = args.get("ids")
        wanted = list(own) if ids is None else ids
        properties = args.get("properties")
        listed = []
        for mailbox_id in wanted:
            if mailbox_id in own:
                view = _mailbox_view(app, own[mailbox_id])
                if properties is not None:
                    view = {k: v for k, v in view.items() if k in properties or k == "id"}
                listed.append(view)
        return [("Mailbox/get", {"accountId": account_id, "state": _state(app, account_id), "list": listed,
                                 "notFound": [i for i in wanted if i not in own]})]


def mailbox_query(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Mailbox/query (filter by role or name)."""
    require_capability(app, "Mailbox/query", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Mailbox/query")
        condition = args.get("filter") or {}
        ids = [m["id"] for m in app.state.data["mailboxes"].values() if m["accountId"] == account_id
               and all(m.get(k) == v for k, v in condition.items() if k in ("role", "name"))]
        return [("Mailbox/query", {"accountId": account_id, "queryState": _state(app, account_id),
                                   "canCalculateChanges": False, "position": 0, "ids": ids, "total": len(ids)})]


# -- Email


def _email_view(app: App, record: dict[str, Any], properties: list[str], args: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"id": record["id"]}
    need_raw = any(p not in ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
                   for p in properties)
    raw = app.state.read_blob(record["blobId"]) or b"" if need_raw else b""
    headers, _ = message.split_message(raw) if need_raw else ([], b"")

    def first(name: str) -> str | None:
        values = message.header_values(headers, name)
        return values[0] if values else None

    for prop in properties:
        if prop in ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt"):
            view[prop] = record[prop]
        elif prop in _ADDRESS_FIELDS:
            view[prop] = message.as_addresses(first(_ADDRESS_FIELDS[prop]))
        elif prop in _ID_FIELDS:
            view[prop] = message.as_message_ids(first(_ID_FIELDS[prop]))
        elif prop == "subject":
            subject = first("Subject")
            view[prop] = message.as_text(subject) if subject is not None else None
        elif prop == "sentAt":
            view[prop] = message.as_date(first("Date"))
        elif prop == "headers":
            view[prop] = [{"name": name, "value": value.removesuffix("\r\n").removesuffix("\n")}
                          for name, value in headers]
        elif prop == "preview":
            view[prop] = " ".join(message.text_body(raw).split())[:256]
        elif prop == "hasAttachment":
            view[prop] = message.has_attachment(raw)
        elif prop in ("textBody", "bodyValues"):
            text = message.text_body(raw)
            if prop == "textBody":
                view[prop] = [{"partId": "1", "blobId": record["blobId"], "type": "text/plain", "size": len(text)}]
            else:
                wanted = args.get("fetchTextBodyValues") or args.get("fetchAllBodyValues")
                view[prop] = {"1": {"value": text, "isEncodingProblem": False, "isTruncated": False}} if wanted else {}
        elif prop.startswith("header:"):
            parts = prop.split(":")
            name = parts[1]
            form = parts[2] if len(parts) > 2 and parts[2] != "all" else "Raw"
            values = message.header_values(headers, name)
            converted = [_header_form(value, form) for value in values]
            view[prop] = converted if parts[-1] == "all" else (converted[-1] if converted else None)
        else:
            view[prop] = None
    return view


def _header_form(value: str, form: str) -> Any:
    if form == "asText":
        return message.as_text(value)
    if form == "asAddresses":
        return message.as_addresses(value)
    if form == "asMessageIds":
        return message.as_message_ids(value)
    if form == "asDate":
        return message.as_date(value)
    return value.removesuffix("\r\n").removesuffix("\n")


def email_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Email/get."""
    require_capability(app, "Email/get", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Email/get")
        emails = app.state.data["emails"]
        ids = args.get("ids")
        wanted = [i for i, e in emails.items() if e["accountId"] == account_id] if ids is None else ids
        properties = args.get("properties") or _DEFAULT_EMAIL_PROPERTIES
        found = [emails[i] for i in wanted if i in emails and emails[i]["accountId"] == account_id]
        state = _state(app, account_id)
        not_found = [i for i in wanted if i not in emails or emails[i]["accountId"] != account_id]
    listed = [_email_view(app, record, properties, args) for record in found]
    return [("Email/get", {"accountId": account_id, "state": state, "list": listed, "notFound": not_found})]


def _utc(text: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError) as error:
        raise MethodError("invalidArguments", f"filter.{field}: expected a UTCDate, got {text!r}") from error


def email_query(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Email/query: filter inMailbox/after/before, sort receivedAt, position/limit."""
    require_capability(app, "Email/query", using, MAIL)
    condition = args.get("filter") or {}
    unknown = set(condition) - {"inMailbox", "after", "before"}
    if unknown:
        raise MethodError("unsupportedFilter", f"filter properties {sorted(unknown)} are not supported here")
    sort = args.get("sort") or [{"property": "receivedAt", "isAscending": True}]
    if not isinstance(sort, list) or any(s.get("property") != "receivedAt" for s in sort):
        raise MethodError("unsupportedSort", f"only receivedAt sorting is supported, got {sort!r}")
    ascending = bool(sort[0].get("isAscending", True))
    with app.state.lock:
        account_id = _account(app, principal, args, "Email/query")
        records = [e for e in app.state.data["emails"].values() if e["accountId"] == account_id]
        state = _state(app, account_id)
    if "inMailbox" in condition:
        records = [e for e in records if condition["inMailbox"] in e["mailboxIds"]]
    if "after" in condition:
        after = _utc(condition["after"], "after")
        records = [e for e in records if _utc(e["receivedAt"], "receivedAt") >= after]
    if "before" in condition:
        before = _utc(condition["before"], "before")
        records = [e for e in records if _utc(e["receivedAt"], "receivedAt") < before]
    records.sort(key=lambda e: (e["receivedAt"], e["order"]), reverse=not ascending)
    ids = [e["id"] for e in records]
    position = int(args.get("position") or 0)
    if position < 0:
        position = max(0, len(ids) + position)
    limit = args.get("limit")
    page = ids[position:] if limit is None else ids[position:position + int(limit)]
    answer = {"accountId": account_id, "queryState": state, "canCalculateChanges": False, "position": position,
              "ids": page}
    if args.get("calculateTotal", True):
        answer["total"] = len(ids)
    return [("Email/query", answer)]


def _changes(kind: str) -> Method:
    def method(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
        name = f"{kind}/changes"
        require_capability(app, name, using, MAIL)
        with app.state.lock:
            account_id = _account(app, principal, args, name)
            entry = app.state.data["changes"].get(account_id, {"state": 1, "floor": 1, "log": []})
            since_text = args.get("sinceState")
            if not isinstance(since_text, str) or not since_text.isdigit():
                app.state.violation(f"{name}.sinceState: expected a state string, got {since_text!r}")
                raise MethodError("invalidArguments", f"sinceState {since_text!r} is no state of ours")
            since = int(since_text)
            if since < entry["floor"] or since > entry["state"]:
                raise MethodError("cannotCalculateChanges", f"no changes kept since state {since}")
            max_changes = args.get("maxChanges")
            logged = [e for e in entry["log"] if e[0] > since]
            relevant = [e for e in logged if e[1] == kind]
            has_more = False
            new_state = entry["state"]
            if isinstance(max_changes, int) and max_changes > 0 and len(relevant) > max_changes:
                relevant = relevant[:max_changes]
                new_state = relevant[-1][0]
                has_more = True
            created: list[str] = []
            updated: list[str] = []
            destroyed: list[str] = []
            for _, _, object_id, change in relevant:
                if change == "created":
                    created.append(object_id)
                elif change == "updated" and object_id not in created and object_id not in updated:
                    updated.append(object_id)
                elif change == "destroyed":
                    if object_id in created:
                        created.remove(object_id)
                    else:
                        destroyed.append(object_id)
                    if object_id in updated:
                        updated.remove(object_id)
        answer = {"accountId": account_id, "oldState": since_text, "newState": str(new_state),
                  "hasMoreChanges": has_more, "created": created, "updated": updated, "destroyed": destroyed}
        if kind == "Mailbox":
            answer["updatedProperties"] = None
        return [(name, answer)]

    return method


def email_import(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Email/import: uploaded blobs become Emails."""
    require_capability(app, "Email/import", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Email/import")
        old_state = _state(app, account_id)
        own_boxes = {k for k, m in app.state.data["mailboxes"].items() if m["accountId"] == account_id}
    created: dict[str, Any] = {}
    not_created: dict[str, Any] = {}
    emails = args.get("emails")
    if not isinstance(emails, dict):
        app.state.violation(f"Email/import.emails: expected a map of creation id to import, got {emails!r}")
        raise MethodError("invalidArguments", "emails must be a map")
    for creation_id, item in emails.items():
        raw = blob_of(app, account_id, str(item.get("blobId")))
        mailbox_ids = item.get("mailboxIds") or {}
        if raw is None:
            not_created[creation_id] = {"type": "blobNotFound", "notFound": [item.get("blobId")]}
        elif not mailbox_ids or any(m not in own_boxes for m in mailbox_ids):
            not_created[creation_id] = {"type": "invalidProperties", "properties": ["mailboxIds"],
                                        "description": f"unknown mailboxes {sorted(mailbox_ids)}"}
        else:
            record = add_email(app, account_id, raw, mailbox_ids, item.get("keywords") or {}, item.get("receivedAt"))
            created[creation_id] = {k: record[k] for k in ("id", "blobId", "threadId", "size")}
    return [("Email/import", {"accountId": account_id, "oldState": old_state, "newState": _state(app, account_id),
                              "created": created or None, "notCreated": not_created or None})]


def apply_email_patch(app: App, account_id: str, email_id: str, patch: dict[str, Any]) -> dict[str, Any] | None:
    """Update keywords/mailboxIds of an Email (full or ``keywords/$seen`` form); an error body or None."""
    with app.state.lock:
        record = app.state.data["emails"].get(email_id)
        if record is None or record["accountId"] != account_id:
            return {"type": "notFound"}
        new = {"keywords": dict(record["keywords"]), "mailboxIds": dict(record["mailboxIds"])}
        for path, value in patch.items():
            top, _, key = path.partition("/")
            if top not in new:
                return {"type": "invalidProperties", "properties": [top],
                        "description": f"only keywords and mailboxIds can change, not {top}"}
            if key:
                if value is None or value is False:
                    new[top].pop(key, None)
                else:
                    new[top][key] = True
            elif isinstance(value, dict):
                new[top] = {k: True for k, v in value.items() if v}
            else:
                return {"type": "invalidProperties", "properties": [top]}
        if not new["mailboxIds"]:
            return {"type": "invalidProperties", "properties": ["mailboxIds"], "description": "no mailbox left"}
        touched = set(record["mailboxIds"]) ^ set(new["mailboxIds"])
        record.update(new)
        app.state.record_change(account_id, "Email", email_id, "updated")
        for mailbox_id in touched:
            app.state.record_change(account_id, "Mailbox", mailbox_id, "updated")
        app.state.save()
    app.hub.notify(account_id)
    return None


def destroy_email(app: App, account_id: str, email_id: str) -> bool:
    """Remove an Email; whether it existed."""
    with app.state.lock:
        record = app.state.data["emails"].get(email_id)
        if record is None or record["accountId"] != account_id:
            return False
        del app.state.data["emails"][email_id]
        app.state.record_change(account_id, "Email", email_id, "destroyed")
        for mailbox_id in record["mailboxIds"]:
            app.state.record_change(account_id, "Mailbox", mailbox_id, "updated")
        app.state.save()
    app.hub.notify(account_id)
    return True


def email_set(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Email/set: update keywords/mailboxIds, destroy (create is not supported: import instead)."""
    require_capability(app, "Email/set", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Email/set")
        old_state = _state(app, account_id)
    answer: dict[str, Any] = {"accountId": account_id, "oldState": old_state, "created": None, "updated": None,
                              "destroyed": None, "notCreated": None, "notUpdated": None, "notDestroyed": None}
    for creation_id in args.get("create") or {}:
        answer["notCreated"] = {**(answer["notCreated"] or {}), creation_id: {
            "type": "forbidden", "description": "the stand-in does not create Emails from properties; use import"}}
    for email_id, patch in (args.get("update") or {}).items():
        error = apply_email_patch(app, account_id, email_id, patch) if isinstance(patch, dict) else {
            "type": "invalidPatch"}
        if error is None:
            answer["updated"] = {**(answer["updated"] or {}), email_id: None}
        else:
            answer["notUpdated"] = {**(answer["notUpdated"] or {}), email_id: error}
    for email_id in args.get("destroy") or []:
        if destroy_email(app, account_id, email_id):
            answer["destroyed"] = [*(answer["destroyed"] or []), email_id]
        else:
            answer["notDestroyed"] = {**(answer["notDestroyed"] or {}), email_id: {"type": "notFound"}}
    answer["newState"] = _state(app, account_id)
    return [("Email/set", answer)]


def thread_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Thread/get: every Email is its own thread."""
    require_capability(app, "Thread/get", using, MAIL)
    with app.state.lock:
        account_id = _account(app, principal, args, "Thread/get")
        by_thread = {e["threadId"]: e["id"] for e in app.state.data["emails"].values()
                     if e["accountId"] == account_id}
        ids = args.get("ids") or []
        return [("Thread/get", {"accountId": account_id, "state": _state(app, account_id),
                                "list": [{"id": t, "emailIds": [by_thread[t]]} for t in ids if t in by_thread],
                                "notFound": [t for t in ids if t not in by_thread]})]


def identity_id(account_id: str) -> str:
    """The one Identity of an account."""
    return "i" + account_id


def identity_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Identity/get: one identity per account, with its address."""
    require_capability(app, "Identity/get", using, SUBMISSION)
    with app.state.lock:
        account_id = _account(app, principal, args, "Identity/get")
        account = app.state.data["accounts"][account_id]
    identity = {"id": identity_id(account_id), "name": account.get("description") or "", "email": account["name"],
                "replyTo": None, "bcc": None, "textSignature": "", "htmlSignature": "", "mayDelete": False}
    ids = args.get("ids")
    listed = [identity] if ids is None or identity["id"] in ids else []
    return [("Identity/get", {"accountId": account_id, "state": "1", "list": listed,
                              "notFound": [i for i in ids or [] if i != identity["id"]]})]


MAIL_METHODS: dict[str, Method] = {
    "Mailbox/get": mailbox_get, "Mailbox/query": mailbox_query, "Mailbox/changes": _changes("Mailbox"),
    "Email/get": email_get, "Email/query": email_query, "Email/changes": _changes("Email"),
    "Email/import": email_import, "Email/set": email_set, "Thread/get": thread_get, "Identity/get": identity_get,
}
try:
    from submission import emailsubmission_get, emailsubmission_set

    MAIL_METHODS["EmailSubmission/set"] = emailsubmission_set
    MAIL_METHODS["EmailSubmission/get"] = emailsubmission_get
except ImportError:
    pass
