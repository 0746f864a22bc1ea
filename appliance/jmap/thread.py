"""Thread/get and Thread/changes (RFC 8621 3): the emails of a conversation, oldest first.

Threads are the store's: a message joins a thread only through a message
exchanged with its own sender (``appliance.store.messages``). Mail written through
JMAP (drafts, imports) joins the thread of the message it replies to.
"""

from __future__ import annotations

__all__: list[str] = []

from typing import Any

import duckdb

from appliance.jmap.core import (
    args_of,
    changes_answer,
    compute_changes,
    get_ids,
    properties_of,
    read,
    states_of,
)
from appliance.jmap.proto import MAIL, ChangesArgs, GetArgs, MethodError
from appliance.jmap.router import Call, method
from appliance.store import jmap as jmap_store

PROPERTIES = ["id", "emailIds"]


@method("Thread/get", MAIL)
async def thread_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(GetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.ids)
    properties = properties_of(args.properties, set(PROPERTIES), PROPERTIES)
    limit = call.service.limits.max_objects_in_get

    def work(con: duckdb.DuckDBPyConnection) -> tuple[str, dict[str, list[str]]]:
        found = jmap_store.threads(con, agent, ids)
        if ids is None and len(found) > limit:
            raise MethodError("requestTooLarge", f"the account has more than {limit} threads: give ids")
        return states_of(con, agent).state("Thread"), found

    state, found = await read(call, work)
    order = ids if ids is not None else sorted(found)
    return {"accountId": args.account_id, "state": state,
            "list": [{p: (i if p == "id" else found[i]) for p in properties} for i in order if i in found],
            "notFound": [i for i in (ids or []) if i not in found]}


@method("Thread/changes", MAIL)
async def thread_changes(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(ChangesArgs, arguments)
    agent = await call.agent(args.account_id)

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        states, found = compute_changes(con, agent, "Thread", args.since_state,
                                        lambda ids: jmap_store.existing_threads(con, agent, ids), args.max_changes)
        return changes_answer(args.account_id, args.since_state, states, found)

    return await read(call, work)
