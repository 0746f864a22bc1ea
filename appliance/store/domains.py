"""The mail domains the operator added, and the history of their DNS checks.

The statements only: ``appliance.domains.service`` decides what a domain gets
(keys, manifest) and ``appliance.domains.verify`` what a check found.
"""

from __future__ import annotations

__all__ = ["SCHEMA", "DomainRow", "add_domain", "check_history", "get_domain", "list_domains", "record_check"]

from datetime import datetime

import duckdb
import msgspec

from appliance.domains.verify import DomainCheck, RecordCheck
from appliance.store.schema import TableFamily

SCHEMA = TableFamily(
    owner=__name__,
    tables=("domains", "domain_checks", "domain_check_seq"),
    ddl=(
        # One row per mail domain (A-labels, lowercase); ``selectors``: the DKIM selectors made for it when added.
        """CREATE TABLE IF NOT EXISTS domains (
        name VARCHAR PRIMARY KEY,
        added_at TIMESTAMP NOT NULL,
        selectors VARCHAR[] NOT NULL
    )""",
        "CREATE SEQUENCE IF NOT EXISTS domain_check_seq",
        # One row per record per check; the rows of one check share ``check_id`` and ``checked_at``.
        """CREATE TABLE IF NOT EXISTS domain_checks (
        check_id BIGINT NOT NULL,
        domain VARCHAR NOT NULL,
        checked_at TIMESTAMP NOT NULL,
        position INTEGER NOT NULL,
        record_name VARCHAR NOT NULL,
        record_type VARCHAR NOT NULL,
        state VARCHAR NOT NULL,
        expected VARCHAR NOT NULL,
        found VARCHAR[] NOT NULL,
        advice VARCHAR NOT NULL
    )""",
        "CREATE INDEX IF NOT EXISTS domain_checks_by_domain ON domain_checks (domain, check_id)",
    ),
)


class DomainRow(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    added_at: datetime
    selectors: tuple[str, ...]


def add_domain(con: duckdb.DuckDBPyConnection, name: str, selectors: list[str], *, now: datetime) -> bool:
    """Record ``name``; False (and nothing written) when it is there already."""
    if con.execute("SELECT 1 FROM domains WHERE name = ?", [name]).fetchone():
        return False
    con.execute("INSERT INTO domains (name, added_at, selectors) VALUES (?, ?, ?)", [name, now, selectors])
    return True


def _row(values: tuple[object, ...]) -> DomainRow:
    name, added_at, selectors = values
    return DomainRow(name=str(name), added_at=added_at, selectors=tuple(selectors))  # type: ignore[arg-type]


def list_domains(con: duckdb.DuckDBPyConnection) -> list[DomainRow]:
    """Every domain, by name."""
    return [_row(r) for r in con.execute("SELECT name, added_at, selectors FROM domains ORDER BY name").fetchall()]


def get_domain(con: duckdb.DuckDBPyConnection, name: str) -> DomainRow | None:
    found = con.execute("SELECT name, added_at, selectors FROM domains WHERE name = ?", [name]).fetchone()
    return _row(found) if found else None


def record_check(con: duckdb.DuckDBPyConnection, check: DomainCheck) -> int:
    """Append ``check`` (one row per record); return its id."""
    drawn = con.execute("SELECT nextval('domain_check_seq')").fetchone()
    assert drawn is not None
    check_id = int(drawn[0])
    rows = [[check_id, check.domain, check.checked_at, i, r.name, r.type, r.state, r.expected, list(r.found),
             r.advice] for i, r in enumerate(check.records)]
    if rows:
        con.executemany("INSERT INTO domain_checks (check_id, domain, checked_at, position, record_name, "
                        "record_type, state, expected, found, advice) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return check_id


def check_history(con: duckdb.DuckDBPyConnection, domain: str, *, limit: int) -> list[DomainCheck]:
    """The last ``limit`` checks of ``domain``, newest first."""
    rows = con.execute(
        "SELECT check_id, checked_at, record_name, record_type, state, expected, found, advice FROM domain_checks "
        "WHERE domain = ? AND check_id IN (SELECT DISTINCT check_id FROM domain_checks WHERE domain = ? "
        "ORDER BY check_id DESC LIMIT ?) ORDER BY check_id DESC, position", [domain, domain, limit]).fetchall()
    grouped: dict[int, tuple[datetime, list[RecordCheck]]] = {}
    for check_id, checked_at, name, rdtype, state, expected, found, advice in rows:
        grouped.setdefault(check_id, (checked_at, []))[1].append(RecordCheck(
            name=name, type=rdtype, state=state, expected=expected, found=tuple(found), advice=advice))
    return [DomainCheck(domain=domain, checked_at=at, ok=all(r.state == "ok" for r in records),
                        records=tuple(records)) for at, records in grouped.values()]
