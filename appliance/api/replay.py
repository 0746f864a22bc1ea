"""Policy replay over HTTP (admin): the running appliance judges an agent's history again under a new policy.

``appliance policy replay`` goes through here while the appliance holds the database. The policy
travels as its document (``policy_to_builtins``) and is validated by the same loader as a policy
file, so a request can neither skip a check nor run code (a Python policy is evaluated by the CLI,
which sends what it produced).
"""

from __future__ import annotations

__all__ = ["ReplayController", "ReplayRequest"]

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import JSONBody

from appliance.api.auth import admin_guard
from appliance.audit.replay import replay_history
from appliance.errors import InputError
from appliance.gate.replay import ReplayReport
from appliance.inbound.readers import ReaderPool
from appliance.policy import policy_from_builtins
from appliance.policy.book import PolicyBook
from appliance.store.database import Database


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Whose history, since when (UTC), and the policy to try, as its document (camelCase, as in a file)."""

    agent: str
    since: datetime
    policy: dict[str, Any]


class ReplayController(Controller):
    path = "/api/v1/policies/replay"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", status_code=200)
    async def replay(self, data: JSONBody[ReplayRequest], db: NamedDependency[Database],
                     policies: NamedDependency[PolicyBook], reader: NamedDependency[ReaderPool]) -> ReplayReport:
        agent = data.agent.strip().lower()
        if policies.get(agent) is None:
            raise ValidationException(f"agent: {data.agent!r} is not an agent of this appliance")
        try:
            policy = policy_from_builtins(data.policy, source="policy")
        except InputError as exc:
            raise ValidationException(str(exc)) from exc
        since = data.since.astimezone(UTC).replace(tzinfo=None) if data.since.tzinfo is not None else data.since
        return await replay_history(db, agent, policy, since, reading=reader.limits)
