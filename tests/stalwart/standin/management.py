"""Management JMAP (0.16): x:Domain, x:DkimSignature, x:Account, x:ApiKey, x:MtaHook, x:Certificate, x:Action.

Shapes are checked strictly (shapes.py); every violation is recorded and answered the JMAP way
(notCreated/notUpdated invalidProperties naming the properties)."""

from __future__ import annotations

import secrets
from typing import Any

import shapes
from app import App
from dkim_keys import generate_later, zone_file
from jmap import Method, MethodError, Principal
from logs import log
from tls import load_certificates

_COLLECTION = {"Domain": "domains", "DkimSignature": "dkim", "Account": "accounts", "ApiKey": "apiKeys",
               "MtaHook": "hooks", "Certificate": "certificates"}
_SCHEMA = {"Domain": shapes.DOMAIN, "Account": shapes.ACCOUNT, "ApiKey": shapes.API_KEY,
           "MtaHook": shapes.MTA_HOOK, "Certificate": shapes.CERTIFICATE}
_HIDDEN = {"DkimSignature": {"privateKey"}, "ApiKey": {"secret"}}
_MAILBOXES = (("Inbox", "inbox"), ("Drafts", "drafts"), ("Sent", "sent"))


class SetError(Exception):
    """One object's notCreated/notUpdated entry."""

    def __init__(self, kind: str, description: str, properties: list[str] | None = None) -> None:
        super().__init__(description)
        self.body: dict[str, Any] = {"type": kind, "description": description}
        if properties is not None:
            self.body["properties"] = properties


def _state(app: App) -> str:
    return str(app.state.data["managementState"])


def _bump(app: App) -> None:
    app.state.data["managementState"] += 1


def _check(app: App, kind: str, obj: Any, where: str, partial: bool) -> None:
    """Every property known and well-typed (and required ones present unless ``partial``)."""
    if not isinstance(obj, dict):
        app.state.violation(f"x:{kind} {where}: expected an object, got {obj!r}")
        raise SetError("invalidProperties", f"{where}: expected an object", [])
    schema = _SCHEMA[kind]
    bad: list[str] = []
    for key, value in obj.items():
        check = schema.get(key)
        if check is None:
            app.state.violation(f"x:{kind}.{key} ({where}): unknown property (known: {sorted(schema)})")
            bad.append(key)
            continue
        problem = check(value)
        if problem:
            app.state.violation(f"x:{kind}.{key} ({where}): expected {problem}")
            bad.append(key)
    if not partial:
        for key in shapes.REQUIRED[kind]:
            if key not in obj:
                app.state.violation(f"x:{kind}.{key} ({where}): required property missing")
                bad.append(key)
    if bad:
        raise SetError("invalidProperties", f"invalid properties: {', '.join(bad)}", bad)


def _semantics(app: App, kind: str, obj: dict[str, Any], own_id: str | None, args: dict[str, Any]) -> None:
    """Cross-object rules: unique names, known domain, key owner."""
    data = app.state.data
    if kind == "Domain":
        if any(d["name"] == obj["name"] and d["id"] != own_id for d in data["domains"].values()):
            raise SetError("alreadyExists", f"domain {obj['name']} already exists")
    elif kind == "Account":
        domain = data["domains"].get(obj.get("domainId"))
        if domain is None:
            app.state.violation(f"x:Account.domainId: unknown domain id {obj.get('domainId')!r}")
            raise SetError("invalidProperties", f"domainId {obj.get('domainId')!r} is no domain", ["domainId"])
        if obj["name"].rpartition("@")[2] != domain["name"]:
            app.state.violation(f"x:Account.name: {obj['name']!r} is not in domain {domain['name']}")
            raise SetError("invalidProperties", f"name must be local@{domain['name']}", ["name"])
        if any(a["name"] == obj["name"] and a["id"] != own_id for a in data["accounts"].values()):
            raise SetError("alreadyExists", f"account {obj['name']} already exists")


def _patched(obj: dict[str, Any], patch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a JMAP patch (``a`` or ``a/b`` keys); the new object and the top-level values touched."""
    new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in obj.items()}
    touched: dict[str, Any] = {}
    for path, value in patch.items():
        parts = path.split("/")
        target = new
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SetError("invalidPatch", f"{path}: {part} is not an object")
        if value is None:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
        if parts[0] in new:
            touched[parts[0]] = new[parts[0]]
    return new, touched


def _public(kind: str, obj: dict[str, Any], app: App, properties: list[str] | None) -> dict[str, Any]:
    hidden = _HIDDEN.get(kind, set()) | {"order"}
    shown = {k: v for k, v in obj.items() if k not in hidden}
    if kind == "Account":
        shown["credentials"] = {k: {"@type": c.get("@type")} for k, c in (obj.get("credentials") or {}).items()}
    if kind == "Domain":
        shown["dnsZoneFile"] = zone_file(app, obj)
    if properties is not None:
        shown = {k: v for k, v in shown.items() if k in properties or k == "id"}
    return shown


def _owned(kind: str, obj: dict[str, Any], args: dict[str, Any]) -> bool:
    return kind != "ApiKey" or "accountId" not in args or obj.get("accountId") == args["accountId"]


def _get(kind: str) -> Method:
    def method(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
        ids = args.get("ids")
        properties = args.get("properties")
        with app.state.lock:
            collection = app.state.data[_COLLECTION[kind]]
            wanted = list(collection) if ids is None else ids
            if not isinstance(wanted, list):
                app.state.violation(f"x:{kind}/get.ids: expected a list of ids or null, got {ids!r}")
                raise MethodError("invalidArguments", "ids must be a list or null")
            found = [collection[i] for i in wanted if i in collection and _owned(kind, collection[i], args)]
            listed = [_public(kind, obj, app, properties) for obj in found]
            not_found = [i for i in wanted if i not in collection or not _owned(kind, collection[i], args)]
            answer = {"state": _state(app), "list": listed, "notFound": not_found}
        if "accountId" in args:
            answer["accountId"] = args["accountId"]
        return [(f"x:{kind}/get", answer)]

    return method


def _query(kind: str) -> Method:
    def method(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
        condition = args.get("filter") or {}
        if not isinstance(condition, dict):
            app.state.violation(f"x:{kind}/query.filter: expected an object, got {condition!r}")
            raise MethodError("invalidArguments", "filter must be an object")
        with app.state.lock:
            objects = [o for o in app.state.data[_COLLECTION[kind]].values() if _owned(kind, o, args)]
            ids = [o["id"] for o in objects if all(o.get(k) == v for k, v in condition.items())]
            state = _state(app)
        position = int(args.get("position") or 0)
        limit = args.get("limit")
        page = ids[position:] if limit is None else ids[position:position + int(limit)]
        return [(f"x:{kind}/query", {"queryState": state, "canCalculateChanges": False, "position": position,
                                     "ids": page, "total": len(ids)})]

    return method


def create_mailboxes(app: App, account_id: str) -> None:
    """Inbox, Drafts and Sent of a new account."""
    for name, role in _MAILBOXES:
        mailbox_id = app.state.new_id()
        app.state.data["mailboxes"][mailbox_id] = {
            "id": mailbox_id, "accountId": account_id, "name": name, "role": role, "sortOrder": 0,
        }
        app.state.record_change(account_id, "Mailbox", mailbox_id, "created")


def _destroy_account(app: App, account_id: str) -> None:
    data = app.state.data
    for key_id in [k for k, v in data["apiKeys"].items() if v["accountId"] == account_id]:
        del data["apiKeys"][key_id]
    for mailbox_id in [k for k, v in data["mailboxes"].items() if v["accountId"] == account_id]:
        del data["mailboxes"][mailbox_id]
    for email_id in [k for k, v in data["emails"].items() if v["accountId"] == account_id]:
        del data["emails"][email_id]


def _set(kind: str) -> Method:
    def method(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
        data = app.state.data
        collection_name = _COLLECTION[kind]
        answer: dict[str, Any] = {"created": None, "updated": None, "destroyed": None,
                                  "notCreated": None, "notUpdated": None, "notDestroyed": None}
        if "accountId" in args:
            answer["accountId"] = args["accountId"]
        for field in ("create", "update"):
            value = args.get(field)
            if value is not None and not isinstance(value, dict):
                app.state.violation(f"x:{kind}/set.{field}: expected a map of id to object, got {value!r}")
                raise MethodError("invalidArguments", f"{field} must be a map")
        with app.state.lock:
            answer["oldState"] = _state(app)
            for creation_id, obj in (args.get("create") or {}).items():
                try:
                    _check(app, kind, obj, f"create {creation_id}", partial=False)
                    _semantics(app, kind, obj, None, args)
                    answer["created"] = answer["created"] or {}
                    answer["created"][creation_id] = _create(app, kind, dict(obj), args)
                except SetError as error:
                    answer["notCreated"] = answer["notCreated"] or {}
                    answer["notCreated"][creation_id] = error.body
            for object_id, patch in (args.get("update") or {}).items():
                try:
                    current = data[collection_name].get(object_id)
                    if current is None:
                        raise SetError("notFound", f"no {kind} {object_id}")
                    if not isinstance(patch, dict):
                        app.state.violation(f"x:{kind}/set.update.{object_id}: expected a patch object")
                        raise SetError("invalidPatch", "a patch must be an object")
                    new, touched = _patched(current, patch)
                    touched.pop("id", None)
                    touched.pop("accountId", None)
                    _check(app, kind, touched, f"update {object_id}", partial=True)
                    _semantics(app, kind, new, object_id, args)
                    data[collection_name][object_id] = new
                    _bump(app)
                    answer["updated"] = answer["updated"] or {}
                    answer["updated"][object_id] = None
                except SetError as error:
                    answer["notUpdated"] = answer["notUpdated"] or {}
                    answer["notUpdated"][object_id] = error.body
            for object_id in args.get("destroy") or []:
                if object_id not in data[collection_name]:
                    answer["notDestroyed"] = answer["notDestroyed"] or {}
                    answer["notDestroyed"][object_id] = {"type": "notFound"}
                    continue
                del data[collection_name][object_id]
                if kind == "Account":
                    _destroy_account(app, object_id)
                if kind == "Domain":
                    for key_id in [k for k, v in data["dkim"].items() if v["domainId"] == object_id]:
                        del data["dkim"][key_id]
                _bump(app)
                answer["destroyed"] = [*(answer["destroyed"] or []), object_id]
            answer["newState"] = _state(app)
            app.state.save()
        log("INFO", "management.set", f"x:{kind}/set", created=list(answer["created"] or {}),
            updated=list(answer["updated"] or {}), destroyed=answer["destroyed"] or [])
        return [(f"x:{kind}/set", answer)]

    return method


def _create(app: App, kind: str, obj: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Store a checked new object; what the create response shows about it."""
    data = app.state.data
    shown: dict[str, Any] = {}
    if kind == "ApiKey":
        owner = args.get("accountId")
        if owner not in data["accounts"]:
            app.state.violation(f"x:ApiKey/set.accountId: expected the user's account id, got {owner!r}")
            raise SetError("invalidProperties", f"accountId {owner!r} is no account", ["accountId"])
        obj["accountId"] = owner
        obj["secret"] = "API_" + secrets.token_urlsafe(24)
        shown["secret"] = obj["secret"]
    object_id = app.state.new_id()
    obj["id"] = object_id
    data[_COLLECTION[kind]][object_id] = obj
    _bump(app)
    if kind == "Domain":
        generate_later(app, object_id)
    elif kind == "Account":
        create_mailboxes(app, object_id)
    elif kind == "MtaHook":
        obj["order"] = int(data["nextId"])
    return {"id": object_id, **shown}


def _action_set(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    answer: dict[str, Any] = {"created": None, "notCreated": None, "oldState": "1", "newState": "1"}
    for creation_id, obj in (args.get("create") or {}).items():
        if obj == {"@type": "ReloadSettings"}:
            answer["created"] = {**(answer["created"] or {}), creation_id: {"id": app.state.new_id()}}
            log("INFO", "settings.reload", "settings reloaded (x:Action ReloadSettings)")
        elif obj == {"@type": "ReloadTlsCertificates"}:
            answer["created"] = {**(answer["created"] or {}), creation_id: {"id": app.state.new_id()}}
            load_certificates(app)
        else:
            app.state.violation(f'x:Action create {creation_id}: expected {{"@type":"ReloadSettings"}} or '
                                f'{{"@type":"ReloadTlsCertificates"}}, got {obj!r}')
            answer["notCreated"] = {**(answer["notCreated"] or {}),
                                    creation_id: {"type": "invalidProperties", "properties": ["@type"]}}
    if args.get("update") or args.get("destroy"):
        app.state.violation("x:Action/set: only create is possible")
    return [("x:Action/set", answer)]


MANAGEMENT: dict[str, Method] = {"x:Action/set": _action_set}
for _kind in ("Domain", "Account", "ApiKey", "MtaHook", "Certificate"):
    MANAGEMENT[f"x:{_kind}/get"] = _get(_kind)
    MANAGEMENT[f"x:{_kind}/set"] = _set(_kind)
    MANAGEMENT[f"x:{_kind}/query"] = _query(_kind)
MANAGEMENT["x:DkimSignature/get"] = _get("DkimSignature")
MANAGEMENT["x:DkimSignature/query"] = _query("DkimSignature")
