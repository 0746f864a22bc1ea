"""Agents report the tokens they really spent; the thread's budget is charged."""

from __future__ import annotations

__all__ = ["UsageReport", "UsageResult", "report_usage"]

import time
from typing import Annotated

import duckdb
import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody

from appliance.api.auth import agent_guard, require_agent
from appliance.gate.limits import day_key, thread_key
from appliance.gate.sender import rule_key
from appliance.runtime import Runtime
from appliance.store.limits import PersistentLimits


class UsageReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    thread_id: str
    tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]


class UsageResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    thread_id: str
    charged: int
    thread_total: int


@post("/api/v1/usage", status_code=200, guards=[agent_guard])  # the key is checked before the body is read
async def report_usage(request: Request, state: State, data: JSONBody[UsageReport]) -> UsageResult:  # type: ignore[type-arg]
    """Charge reported usage to a thread (and to the day budget of the rule that admitted it)."""
    agent = require_agent(request)
    runtime: Runtime = state.runtime
    row = await runtime.db.read(lambda con: con.execute(
        "SELECT rule FROM decisions WHERE agent = ? AND thread_id = ? AND action IN ('accept', 'quarantine') "
        "ORDER BY seq DESC LIMIT 1", [agent, data.thread_id]).fetchone())
    if row is None:
        raise NotFoundException(f"no accepted message in thread {data.thread_id} for {agent}")
    keys = [thread_key(agent, data.thread_id)]
    policy = runtime.policies.get(agent)
    if row[0] is not None and policy is not None and row[0] < len(policy.senders):
        keys.append(day_key(agent, rule_key(policy.senders[row[0]].match)))
    now = time.time()
    limits = runtime.reception.limits
    for key in keys:
        limits.add_tokens(key, data.tokens, now)

    def commit(con: duckdb.DuckDBPyConnection) -> None:
        for key in keys:
            PersistentLimits.write_tokens(con, key, data.tokens, now)

    await runtime.db.write(commit)
    return UsageResult(thread_id=data.thread_id, charged=data.tokens,
                       thread_total=limits.tokens_since(keys[0], 0.0))
