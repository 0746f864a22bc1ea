"""EmailSubmission/set: a local SMTP session as Stalwart runs one (client 127.0.0.1 port 0, helo
localhost, sasl.login the account), so the MTA hooks see the agent's outbound mail too."""

from __future__ import annotations

from typing import Any

import message
from app import App
from hooks import Client, request_body, run_hooks
from jmap import SUBMISSION, MethodError, Principal, require_capability
from mail import apply_email_patch, destroy_email, identity_id
from mailstore import account_by_address, is_local_domain, now_utc
from smtp_server import accept_message, queue_id


class _Refused(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("description", body["type"]))
        self.body = body


def _envelope(app: App, item: dict[str, Any], raw: bytes) -> tuple[str, list[str]]:
    envelope = item.get("envelope")
    if envelope is not None:
        try:
            mail_from = str(envelope["mailFrom"]["email"]).lower()
            rcpts = [str(r["email"]).lower() for r in envelope["rcptTo"]]
        except (KeyError, TypeError) as error:
            app.state.violation(f"EmailSubmission.envelope: expected {{mailFrom:{{email}}, rcptTo:[{{email}}]}}, "
                                f"got {envelope!r}")
            raise _Refused({"type": "invalidProperties", "properties": ["envelope"]}) from error
        return mail_from, rcpts
    headers, _ = message.split_message(raw)
    senders = message.as_addresses((message.header_values(headers, "Sender") or message.header_values(headers, "From")
                                    or [None])[0]) or []
    rcpts = []
    for name in ("To", "Cc", "Bcc"):
        for value in message.header_values(headers, name):
            rcpts.extend(a["email"].lower() for a in message.as_addresses(value) or [])
    if not senders:
        raise _Refused({"type": "invalidEmail", "description": "no From address to derive mailFrom from"})
    return senders[0]["email"].lower(), list(dict.fromkeys(rcpts))


def _submit(app: App, principal: Principal, account_id: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _Refused({"type": "invalidProperties", "properties": []})
    account = app.state.data["accounts"][account_id]
    if item.get("identityId") != identity_id(account_id):
        raise _Refused({"type": "invalidProperties", "properties": ["identityId"],
                        "description": f"identity {item.get('identityId')!r} is not this account's"})
    record = app.state.data["emails"].get(item.get("emailId"))
    if record is None or record["accountId"] != account_id:
        raise _Refused({"type": "invalidProperties", "properties": ["emailId"],
                        "description": f"no Email {item.get('emailId')!r}"})
    raw = app.state.read_blob(record["blobId"]) or b""
    mail_from, rcpts = _envelope(app, item, raw)
    if mail_from != account["name"]:
        raise _Refused({"type": "forbiddenMailFrom",
                        "description": f"{mail_from} is not an address of {account['name']}"})
    if not rcpts:
        raise _Refused({"type": "noRecipients", "description": "no recipients"})
    client = Client(ip="127.0.0.1", port=0, helo="localhost", server_ip="127.0.0.1", server_port=0,
                    login=principal.login)
    accepted: list[str] = []
    invalid: list[str] = []
    for rcpt in rcpts:
        verdict = run_hooks(app, "rcpt", request_body("rcpt", client, mail_from, [*accepted, rcpt]))
        if verdict.action == "tempfail":
            raise _Refused({"type": "serverFail", "description": verdict.reply})
        if verdict.action == "reject":
            raise _Refused({"type": "forbiddenToSend", "description": verdict.message or verdict.reply})
        if is_local_domain(app, rcpt) and account_by_address(app, rcpt) is None:
            invalid.append(rcpt)
        else:
            accepted.append(rcpt)
    if invalid:
        raise _Refused({"type": "invalidRecipients", "invalidRecipients": invalid,
                        "description": f"no such mailboxes: {invalid}"})
    queue = queue_id()
    reply, _ = accept_message(app, client, mail_from, accepted, raw, queue)
    if reply.startswith("4"):
        raise _Refused({"type": "serverFail", "description": reply})
    if reply.startswith("5"):
        hook_text = reply.split(" ", 2)[-1] if reply[:3].isdigit() else reply
        raise _Refused({"type": "forbiddenToSend", "description": hook_text})
    submission_id = app.state.new_id()
    submission = {
        "id": submission_id, "accountId": account_id, "identityId": item["identityId"], "emailId": record["id"],
        "threadId": record["threadId"], "sendAt": now_utc(), "undoStatus": "final", "queueId": queue,
        "reply": reply, "envelope": {"mailFrom": {"email": mail_from}, "rcptTo": [{"email": r} for r in accepted]},
    }
    with app.state.lock:
        app.state.data["submissions"][submission_id] = submission
        app.state.save()
    return {"id": submission_id, "threadId": record["threadId"], "sendAt": submission["sendAt"], "undoStatus": "final"}


def emailsubmission_set(app: App, principal: Principal, args: dict[str, Any], using: list[str]
                        ) -> list[tuple[str, Any]]:
    """EmailSubmission/set create (+ onSuccessUpdateEmail / onSuccessDestroyEmail)."""
    require_capability(app, "EmailSubmission/set", using, SUBMISSION)
    account_id = args.get("accountId") or principal.account_id
    if account_id != principal.account_id:
        raise MethodError("accountNotFound", f"account {account_id!r} is not yours")
    assert account_id is not None
    answer: dict[str, Any] = {"accountId": account_id, "oldState": "1", "created": None, "notCreated": None,
                              "updated": None, "destroyed": None, "notUpdated": None, "notDestroyed": None}
    created_emails: dict[str, str] = {}
    for creation_id, item in (args.get("create") or {}).items():
        try:
            # No lock held while hooks run: a hook receiver may well call back into this server.
            created = _submit(app, principal, account_id, item)
            answer["created"] = {**(answer["created"] or {}), creation_id: created}
            created_emails[f"#{creation_id}"] = str(item["emailId"])
            created_emails[created["id"]] = str(item["emailId"])
        except _Refused as refused:
            answer["notCreated"] = {**(answer["notCreated"] or {}), creation_id: refused.body}
    answer["newState"] = str(len(app.state.data["submissions"]) + 1)
    responses: list[tuple[str, Any]] = [("EmailSubmission/set", answer)]
    updates = args.get("onSuccessUpdateEmail") or {}
    destroys = args.get("onSuccessDestroyEmail") or []
    if updates or destroys:
        email_set: dict[str, Any] = {"accountId": account_id, "updated": None, "notUpdated": None,
                                     "destroyed": None, "notDestroyed": None}
        for reference, patch in updates.items():
            email_id = created_emails.get(reference)
            if email_id is None:
                continue
            error = apply_email_patch(app, account_id, email_id, patch)
            key = "updated" if error is None else "notUpdated"
            email_set[key] = {**(email_set[key] or {}), email_id: error}
        for reference in destroys:
            email_id = created_emails.get(reference)
            if email_id is not None and destroy_email(app, account_id, email_id):
                email_set["destroyed"] = [*(email_set["destroyed"] or []), email_id]
        responses.append(("Email/set", email_set))
    return responses


def emailsubmission_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]
                        ) -> list[tuple[str, Any]]:
    """EmailSubmission/get: the account's submissions (all final: sent or refused at once)."""
    require_capability(app, "EmailSubmission/get", using, SUBMISSION)
    account_id = args.get("accountId") or principal.account_id
    if account_id != principal.account_id:
        raise MethodError("accountNotFound", f"account {account_id!r} is not yours")
    with app.state.lock:
        own = {k: s for k, s in app.state.data["submissions"].items() if s["accountId"] == account_id}
        state = str(len(app.state.data["submissions"]) + 1)
    ids = args.get("ids")
    wanted = list(own) if ids is None else ids
    listed = []
    for submission_id in wanted:
        if submission_id in own:
            record = own[submission_id]
            listed.append({k: record[k] for k in ("id", "identityId", "emailId", "threadId", "envelope", "sendAt",
                                                  "undoStatus")} | {"deliveryStatus": None, "dsnBlobIds": [],
                                                                    "mdnBlobIds": []})
    return [("EmailSubmission/get", {"accountId": account_id, "state": state, "list": listed,
                                     "notFound": [i for i in wanted if i not in own]})]
