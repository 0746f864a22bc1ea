"""Identity/get, /changes, /set (RFC 8621 6): each agent sends as itself, under one identity.

The identity is the agent's address and the display name the operator gave
it (``[outbound] display_names``). Its state is a digest of what it says, so
it changes exactly when the configuration does, restarts or not; agents
cannot create, change or destroy identities (``forbidden``).
"""

from __future__ import annotations

__all__ = ["identity_id", "identity_object"]

import hashlib
from typing import Any

import msgspec

from appliance.jmap.core import args_of, get_ids, properties_of
from appliance.jmap.proto import SUBMISSION, ChangesArgs, GetArgs, SetArgs, SetError
from appliance.jmap.router import Call, method

PROPERTIES = ["id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature", "mayDelete"]


def identity_id(agent: str) -> str:
    return "I" + hashlib.sha256(agent.encode()).hexdigest()[:16]


def identity_object(call: Call, agent: str) -> dict[str, Any]:
    names = call.service.runtime.config.outbound.display_names
    name = next((v for k, v in names.items() if k.lower() == agent), "")
    return {"id": identity_id(agent), "name": name, "email": agent, "replyTo": None, "bcc": None,
            "textSignature": "", "htmlSignature": "", "mayDelete": False}


def _state(identity: dict[str, Any]) -> str:
    return hashlib.sha256(msgspec.json.encode(identity)).hexdigest()[:16]


@method("Identity/get", SUBMISSION)
async def identity_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(GetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.ids)
    properties = properties_of(args.properties, set(PROPERTIES), PROPERTIES)
    identity = identity_object(call, agent)
    found = ids is None or identity["id"] in ids
    return {"accountId": args.account_id, "state": _state(identity),
            "list": [{p: identity[p] for p in properties}] if found else [],
            "notFound": [i for i in (ids or []) if i != identity["id"]]}


@method("Identity/changes", SUBMISSION)
async def identity_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(ChangesArgs, arguments)
    agent = await call.agent(args.account_id)
    identity = identity_object(call, agent)
    state = _state(identity)
    changed = args.since_state != state
    return {"accountId": args.account_id, "oldState": args.since_state, "newState": state,
            "hasMoreChanges": False, "created": [], "updated": [identity["id"]] if changed else [],
            "destroyed": []}


@method("Identity/set", SUBMISSION)
async def identity_set(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(SetArgs, arguments)
    agent = await call.agent(args.account_id)
    state = _state(identity_object(call, agent))
    no = SetError("forbidden", "identities are the operator's: an agent sends as its own address")
    return {"accountId": args.account_id, "oldState": state, "newState": state, "created": None, "updated": None,
            "destroyed": None, "notCreated": {k: no for k in args.create or {}} or None,
            "notUpdated": {k: no for k in args.update or {}} or None,
            "notDestroyed": {k: no for k in args.destroy or []} or None}
