"""Agents report the tokens they really spent; the thread's budget is charged."""

from __future__ import annotations

__all__ = ["UsageReport", "UsageResult", "report_usage"]

import time
from typing import Annotated

import duckdb
import msgspec
from litestar import Request, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import JSONBody

from appliance.api.auth import agent_guard, require_agent
from appliance.gate.limits import day_key, thread_key
from appliance.gate.sender import rule_key
from appliance.inbound.reception import Reception
from appliance.policy.book import PolicyBook
from appliance.store.audit import last_admission
from appliance.store.database import Database
from appliance.store.limits import PersistentLimits


class UsageReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    thread_id: str
    tokens: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)]


class UsageResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    thread_id: str
    charged: int
    thread_total: int


@post("/api/v1/usage", status_code=200, guards=[agent_guard])  # the key is checked before the body is read
async def report_usage(request: Request, db: NamedDependency[Database], policies: NamedDependency[PolicyBook],  # type: ignore[type-arg]
                       reception: NamedDependency[Reception], data: JSONBody[UsageReport]) -> UsageResult:
    """Charge reported usage to a thread (and to the day budget of the rule that admitted it)."""
    agent = require_agent(request)
    admitted = await db.read(lambda con: last_admission(con, agent, data.thread_id))
    if admitted is None:
        raise NotFoundException(f"no accepted message in thread {data.thread_id} for {agent}")
    keys = [thread_key(agent, data.thread_id)]
    policy = policies.get(agent)
    rule = admitted.rule
    if rule is not None and policy is not None and rule < len(policy.senders):
        keys.append(day_key(agent, rule_key(policy.senders[rule].match)))
    now = time.time()
    limits = reception.limits
    for key in keys:
        limits.add_tokens(key, data.tokens, now)

    def commit(con: duckdb.DuckDBPyConnection) -> None:
        for key in keys:
            PersistentLimits.write_tokens(con, key, data.tokens, now)

    await db.write(commit)
    return UsageResult(thread_id=data.thread_id, charged=data.tokens,
                       thread_total=limits.tokens_since(keys[0], 0.0))
