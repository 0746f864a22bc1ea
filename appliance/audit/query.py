"""Read-only questions to the audit history: ad-hoc SQL, filtered listings, exports."""

from __future__ import annotations

__all__ = [
    "AuditFilter",
    "ExportRequest",
    "ExportResult",
    "QueryResult",
    "SqlRequest",
    "decisions_page",
    "export_parquet",
    "format_result",
    "readonly_sql",
]

import csv
import io
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import msgspec

from appliance.errors import InputError, Problem

Format = Literal["table", "json", "csv"]


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """Columns and rows of a query, in a form that crosses HTTP unchanged."""

    columns: list[str]
    rows: list[list[Any]]


def readonly_sql(con: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = 100_000) -> QueryResult:
    """Run ``sql`` if every statement in it only reads; InputError otherwise."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise InputError([Problem(source="sql", path="", reason=str(exc))]) from exc
    if not statements:
        raise InputError([Problem(source="sql", path="", reason="no statement given")])
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            raise InputError([Problem(source="sql", path="", reason=(
                f"only SELECT statements are allowed (audit history is read-only), got {statement.type.name}"))])
    try:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description or []]
        rows = [[_plain(v) for v in row] for row in cur.fetchmany(max_rows)]
    except duckdb.Error as exc:
        raise InputError([Problem(source="sql", path="", reason=str(exc))]) from exc
    return QueryResult(columns=columns, rows=rows)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def format_result(result: QueryResult, fmt: Format) -> str:
    """Render a result as an aligned table, JSON lines-of-objects, or CSV."""
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, row, strict=True)) for row in result.rows], indent=1,
                          default=str)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return out.getvalue().rstrip("\n")
    cells = [[("" if v is None else str(v)) for v in row] for row in result.rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(result.columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(line.rstrip() for line in lines)


class SqlRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/audit/sql``."""

    sql: str


class ExportRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/audit/export``."""

    out: str
    """Path on the appliance's machine to write the Parquet file to."""


class ExportResult(msgspec.Struct, frozen=True, kw_only=True):
    out: str
    rows: int


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Filters of ``GET /api/v1/audit``; pagination by ``after`` (the last seq seen)."""

    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    sender: str | None = None
    agent: str | None = None
    after: int = 0
    limit: int = 100


def decisions_page(con: duckdb.DuckDBPyConnection, flt: AuditFilter) -> QueryResult:
    """Decision rows matching ``flt`` in seq order, at most ``limit`` after ``after``."""
    where: list[str] = ["seq > ?"]
    args: list[object] = [flt.after]
    for column, op, value in (("ts", ">=", flt.since), ("ts", "<", flt.until), ("action", "=", flt.action),
                              ("lower(header_from)", "=", flt.sender.lower() if flt.sender else None),
                              ("agent", "=", flt.agent.lower() if flt.agent else None)):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    cur = con.execute(f"SELECT * EXCLUDE (prev_hash, row_hash), row_hash FROM decisions "
                      f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", [*args, min(max(flt.limit, 1), 1000)])
    columns = [d[0] for d in cur.description or []]
    return QueryResult(columns=columns, rows=[[_plain(v) for v in row] for row in cur.fetchall()])


def export_parquet(con: duckdb.DuckDBPyConnection, out: Path) -> int:
    """Write every decision row to a Parquet file at ``out``; return the row count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = str(out).replace("'", "''")
    con.execute(f"COPY (SELECT * FROM decisions ORDER BY seq) TO '{path}' (FORMAT parquet)")
    counted = con.execute("SELECT count(*) FROM decisions").fetchone()
    return int(counted[0]) if counted else 0
