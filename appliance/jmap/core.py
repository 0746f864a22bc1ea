"""Core/echo, and what the standard methods share (RFC 8620 5): arguments, ids, properties, patches."""

from __future__ import annotations

__all__ = [
    "SetOutcome",
    "apply_patch",
    "args_of",
    "changes_answer",
    "check_set_size",
    "echo",
    "get_ids",
    "properties_of",
    "read",
    "states_of",
    "write",
]

from collections.abc import Callable
from typing import Any, TypeVar

import duckdb
import msgspec

from appliance.jmap import changes, local
from appliance.jmap.changes import AccountStates, CannotCalculate, ChangeSet
from appliance.jmap.proto import CORE, MethodError, is_id
from appliance.jmap.router import Call, method
from appliance.store.database import Batch

T = TypeVar("T")
A = TypeVar("A", bound=msgspec.Struct)


@method("Core/echo", CORE)
async def echo(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """RFC 8620 4: the arguments, back."""
    return args


def args_of(kind: type[A], args: dict[str, Any]) -> A:
    try:
        return msgspec.convert(args, kind)
    except msgspec.ValidationError as exc:
        raise MethodError("invalidArguments", str(exc)) from None


_BEHIND = object()


async def read(call: Call, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``work`` in one read snapshot.

    The request's first read also asks, in the same snapshot, whether the index is behind the
    store (one cheap query); only then is the index brought up to date and the read run again.
    """
    db, indexer = call.service.db, call.service.indexer
    if call.request.get("synced"):
        return await db.read(lambda con: local.snapshot(con, work))
    call.request["synced"] = True

    def checked(con: duckdb.DuckDBPyConnection) -> T | object:
        return _BEHIND if indexer.behind(con) else work(con)

    result = await db.read(lambda con: local.snapshot(con, checked))
    if result is _BEHIND:
        await indexer.sync()
        return await db.read(lambda con: local.snapshot(con, work))
    return result  # type: ignore[return-value]


async def write(call: Call, work: Callable[[Batch], T]) -> T:
    """``work`` in the writer's transaction (the index brought up to date first); push is told once committed."""
    if not call.request.get("synced"):
        call.request["synced"] = True
        await call.service.indexer.sync()
    result = await call.service.db.write_batch(work)
    call.service.notify()
    return result


def states_of(con: duckdb.DuckDBPyConnection, agent: str) -> AccountStates:
    states = changes.read_states(con, agent)
    if states is None:  # the index creates every account before the first call runs
        raise MethodError("serverFail", "the account is not ready")
    return states


def get_ids(call: Call, ids: list[str] | None) -> list[str] | None:
    """/get ids: creation references resolved, duplicates dropped, at most maxObjectsInGet."""
    if ids is None:
        return None
    if len(ids) > call.service.limits.max_objects_in_get:
        raise MethodError("requestTooLarge", f"more than {call.service.limits.max_objects_in_get} ids")
    out = []
    for value in ids:
        resolved = call.resolve(value)
        out.append(resolved if resolved is not None else value)
    return list(dict.fromkeys(out))


def properties_of(properties: list[str] | None, known: frozenset[str] | set[str], default: list[str]) -> list[str]:
    if properties is None:
        return default
    unknown = [p for p in properties if p not in known]
    if unknown:
        raise MethodError("invalidArguments", f"unknown properties: {', '.join(unknown[:10])}")
    return list(dict.fromkeys(["id", *properties]))


def check_set_size(call: Call, create: dict[str, Any] | None, update: dict[str, Any] | None,
                   destroy: list[str] | None) -> None:
    count = len(create or {}) + len(update or {}) + len(destroy or [])
    if count > call.service.limits.max_objects_in_set:
        raise MethodError("requestTooLarge", f"more than {call.service.limits.max_objects_in_set} objects")


def since_number(states: AccountStates, since: str) -> int:
    number = changes.parse_state(since, states.epoch)
    if number is None:
        raise MethodError("cannotCalculateChanges", "not a state of this account")
    return number


def changes_answer(account_id: str, since: str, states: AccountStates, found: ChangeSet) -> dict[str, Any]:
    return {"accountId": account_id, "oldState": since, "newState": changes.format_state(states.epoch, found.new_state),
            "hasMoreChanges": found.has_more, "created": found.created, "updated": found.updated,
            "destroyed": found.destroyed}


def compute_changes(con: duckdb.DuckDBPyConnection, agent: str, type_: str, since: str,
                    exists: Callable[[list[str]], set[str]], max_changes: int | None
                    ) -> tuple[AccountStates, ChangeSet]:
    states = states_of(con, agent)
    try:
        return states, changes.changes_since(con, agent, type_, since_number(states, since), states, exists,
                                             max_changes)
    except CannotCalculate:
        raise MethodError("cannotCalculateChanges", "changes since this state are no longer known") from None


def check_state(states: AccountStates, type_: str, if_in_state: str | None) -> None:
    if if_in_state is not None and if_in_state != states.state(type_):
        raise MethodError("stateMismatch", f"the {type_} state is {states.state(type_)}")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(current: dict[str, Any], patch: dict[str, Any], mutable: set[str]) -> tuple[dict[str, Any], list[str]]:
    """A PatchObject (RFC 8620 5.3) applied to ``current``: the result, and the properties it may not set.

    A path is ``property`` or ``property/key`` (one level: JMAP's maps of ids and keywords); a
    path naming both a property and one of its keys is ``invalidPatch`` (ValueError).
    """
    result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
    whole = {unescape(p) for p in patch if "/" not in p}
    bad: list[str] = []
    for path, value in patch.items():
        top, sep, key = path.partition("/")
        top = unescape(top)
        if top not in mutable:
            bad.append(top)
            continue
        if not sep:
            result[top] = value
            continue
        if top in whole or "/" in key:
            raise ValueError(f"{path}: patches both the property and a key of it, or goes too deep")
        target = result.get(top)
        if not isinstance(target, dict):
            raise ValueError(f"{path}: {top} is not an object")
        key = unescape(key)
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return result, sorted(set(bad))


class SetOutcome(msgspec.Struct, kw_only=True):
    """What a /set did: its RFC 8620 5.3 response members, and the creation ids it gave."""

    old_state: str
    new_state: str = ""
    created: dict[str, Any] = msgspec.field(default_factory=dict)
    updated: dict[str, Any] = msgspec.field(default_factory=dict)
    destroyed: list[str] = msgspec.field(default_factory=list)
    not_created: dict[str, Any] = msgspec.field(default_factory=dict)
    not_updated: dict[str, Any] = msgspec.field(default_factory=dict)
    not_destroyed: dict[str, Any] = msgspec.field(default_factory=dict)

    def answer(self, account_id: str) -> dict[str, Any]:
        return {"accountId": account_id, "oldState": self.old_state, "newState": self.new_state,
                "created": self.created or None, "updated": self.updated or None,
                "destroyed": self.destroyed or None, "notCreated": self.not_created or None,
                "notUpdated": self.not_updated or None, "notDestroyed": self.not_destroyed or None}


def record_created(call: Call, outcome: SetOutcome) -> None:
    """The creation ids of ``outcome``, for later calls of the request."""
    for creation_id, created in outcome.created.items():
        call.created_ids[creation_id] = created["id"]


def valid_creation_id(value: str) -> bool:
    return is_id(value)
