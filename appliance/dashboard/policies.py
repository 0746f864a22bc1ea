"""The Policies page: each agent's policy in force, and the history of its reloads.

What is shown is what the running appliance enforces (the ``PolicyBook``), which is the last
good version of the file: a reload that failed is in the history with its reason, and the
policy shown stays the one before it. The history is the audit log's ``policy.reloaded`` and
``policy.rejected`` events.
"""

from __future__ import annotations

__all__ = ["AgentPolicy", "policies_page"]

import json

import duckdb
import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.response import Template

from appliance.config import ApplianceConfig
from appliance.dashboard.pages import page
from appliance.policy import policy_to_builtins
from appliance.policy.book import PolicyBook
from appliance.store import audit as audit_rows
from appliance.store.database import Database

RELOAD_EVENTS = ("policy.reloaded", "policy.rejected")
"""The audit events of a policy file changing (``appliance.runtime.Runtime.watch_policies``)."""
_HISTORY = 50
"""Reloads listed per agent."""


class AgentPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's policy as its page shows it."""

    agent: str
    path: str
    document: str
    """The policy in force as JSON (camelCase, as written in a .json policy); empty when none is loaded."""
    senders: int
    default_action: str
    history: list[audit_rows.EventRow]


def _history(con: duckdb.DuckDBPyConnection, agents: list[str]) -> dict[str, list[audit_rows.EventRow]]:
    return {agent: audit_rows.events_of(con, RELOAD_EVENTS, agent=agent, limit=_HISTORY) for agent in agents}


@get("/policies", name="ui_policies")
async def policies_page(db: NamedDependency[Database], config: NamedDependency[ApplianceConfig],
                        policies: NamedDependency[PolicyBook]) -> Template:
    """Every agent: its policy file, the policy in force and its reloads (newest first)."""
    agents = [a.address.lower() for a in config.agents]
    history = await db.read(lambda con: _history(con, agents))
    shown = []
    for agent in config.agents:
        address = agent.address.lower()
        policy = policies.get(address)
        document = json.dumps(policy_to_builtins(policy), indent=2, ensure_ascii=False) if policy else ""
        shown.append(AgentPolicy(agent=address, path=str(config.path(agent.policy)), document=document,
                                 senders=len(policy.senders) if policy else 0,
                                 default_action=policy.default_action if policy else "",
                                 history=history.get(address, [])))
    return page("policies.html", current="policies", title="Policies", agents=shown)
