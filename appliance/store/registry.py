"""Every table family of the store, in the order ``Database`` creates them."""

from __future__ import annotations

__all__ = ["FAMILIES", "owner_of"]

from appliance.store import (
    audit,
    changes,
    deliveries,
    domains,
    evidence,
    jmap,
    limits,
    messages,
    outbound,
    reports,
    stalwart,
)
from appliance.store.schema import TableFamily

FAMILIES: tuple[TableFamily, ...] = (
    audit.SCHEMA, messages.SCHEMA, limits.SCHEMA, deliveries.SCHEMA, outbound.SCHEMA, changes.SCHEMA,
    jmap.SCHEMA, stalwart.SCHEMA, reports.SCHEMA, domains.SCHEMA, evidence.SCHEMA,
)

_OWNERS = {table: family.owner for family in FAMILIES for table in family.tables}
if len(_OWNERS) != sum(len(f.tables) for f in FAMILIES):  # a table declared twice has two owners
    raise RuntimeError("a table is declared by two families of appliance.store")


def owner_of(table: str) -> str | None:
    """The module that owns ``table``, or None for a name no family declares."""
    return _OWNERS.get(table)
