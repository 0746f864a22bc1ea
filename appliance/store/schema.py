"""The schema registry's vocabulary: which module owns which tables, and the statements that make them.

Each table belongs to exactly one module of ``appliance.store``; that module
declares it (``SCHEMA = TableFamily(...)``) and is the only one to write SQL
on it. Everyone else calls the owner's functions. ``appliance.store.registry``
collects the families; ``Database`` applies them when it opens the file.
"""

from __future__ import annotations

__all__ = ["TableFamily"]

import msgspec


class TableFamily(msgspec.Struct, frozen=True, kw_only=True):
    """The tables (and sequences) one module owns, and the DDL that creates and migrates them, in order."""

    owner: str
    """The owning module, e.g. ``appliance.store.messages``."""
    tables: tuple[str, ...]
    """Tables and sequences this module alone queries."""
    ddl: tuple[str, ...]
    """``CREATE ... IF NOT EXISTS`` and ``ALTER ... IF NOT EXISTS``: safe to run at every start."""
