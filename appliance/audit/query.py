"""Read-only questions to the audit history: ad-hoc SQL, filtered listings, exports.

Ad-hoc SQL never runs on a connection to the appliance's database
=================================================================

Checking that every statement "is a SELECT" does not make SQL read-only:
DuckDB runs ``WITH x AS (DELETE FROM decisions RETURNING *) SELECT * FROM x``
as a SELECT, calls ``nextval`` from a SELECT, and reads host files and URLs
from a SELECT (``read_text('/etc/passwd')``, ``read_csv('http://...')``). So
``readonly_sql`` runs the operator's SQL in a DuckDB of its own:

- Each query gets a fresh in-memory DuckDB instance, locked down when it is
  created (all settings passed to ``connect``, so it never has a moment with
  more rights): ``enable_external_access=false`` (no files, URLs, ATTACH,
  COPY, INSTALL/LOAD), ``autoinstall/autoload_known_extensions=false``,
  ``allow_community_extensions=false``, ``python_enable_replacements=false``
  (no scanning Python objects by name), ``lock_configuration=true`` (no SET
  can undo any of it).
- The tables the query names (a word match on the SQL text, so no parse can
  miss a reference; the tables are those ``appliance.store.registry`` lists)
  are copied into it from one read snapshot of the real database (one
  transaction on the caller's connection), through the Arrow C stream
  interface: DuckDB to DuckDB in C++, no pyarrow needed, about two seconds
  per million decision rows. ``messages.raw`` (the stored messages'
  bytes) is copied only when the query names the column ``raw``. Sequences
  are not copied: ``nextval('delivery_seq')`` has nothing to advance.
- The query runs there under a statement time limit (a timer calls
  ``interrupt()``) and a row cap; whatever it did to the copy goes with the
  instance when it is closed.

Why not a read-only connection to the file itself: while the appliance runs,
its writer instance holds the file. Another process is refused by DuckDB's
lock; in the same process ``duckdb.connect(path, read_only=True)`` is refused
("different configuration") and ``ATTACH path (READ_ONLY)`` from another
instance is refused too ("Unique file handle conflict": one instance per
process may attach a file). A cursor of the writer instance would share its
catalog (writable) and its access to the host's files. A snapshot copy is the
one way to give the query read access and nothing else, the same way whether
the appliance runs (API, a cursor of the writer) or not (CLI, a read-only
connection to the file).

Before copying anything, the statements are parsed (``json_serialize_sql``) so
that an attempt to write gets a clear error naming the rule instead of
whatever the sandbox happens to answer.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_TIMEOUT",
    "EXPORT_MEDIA_TYPE",
    "EXPORT_ROWS_HEADER",
    "AuditFilter",
    "QueryResult",
    "SqlRequest",
    "decisions_page",
    "export_parquet",
    "format_result",
    "readonly_sql",
    "writing_to",
]

import contextlib
import csv
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import duckdb
import msgspec

from appliance.errors import InputError, Problem
from appliance.store import audit as audit_rows
from appliance.store.audit import AuditFilter, export_parquet
from appliance.store.registry import FAMILIES

Format = Literal["table", "json", "csv"]

DEFAULT_MAX_ROWS = 100_000
"""Rows a query may return; more is an error (add LIMIT or aggregate), never a silent cut."""
DEFAULT_TIMEOUT = 20.0
"""Seconds a query may take, copying its tables included."""

EXPORT_MEDIA_TYPE = "application/vnd.apache.parquet"
EXPORT_ROWS_HEADER = "x-audit-rows"
"""Response header of ``POST /api/v1/audit/export``: the decision rows in the file."""

_SANDBOX: dict[str, str | bool | int | float] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,
    "lock_configuration": True,
}
"""Settings of the instance a query runs in (given to ``connect``: in force from its first moment)."""

_ON_REQUEST = {"messages": frozenset({"raw"})}
"""Bulky columns copied only when the query names them."""

_SEQUENCE_FUNCTIONS = frozenset({"nextval", "currval", "setval"})
_STAGING = "_appliance_snapshot"


class QueryResult(msgspec.Struct, frozen=True, kw_only=True):
    """Columns and rows of a query, in a form that crosses HTTP unchanged."""

    columns: list[str]
    rows: list[list[Any]]


def _problem(reason: str) -> InputError:
    return InputError([Problem(source="sql", path="", reason=reason)])


def _read_only(reason: str) -> InputError:
    return _problem(f"audit SQL is read-only: {reason}")


def readonly_sql(con: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int = DEFAULT_MAX_ROWS,
                 timeout: float = DEFAULT_TIMEOUT) -> QueryResult:
    """Run ``sql`` over a snapshot of the tables it names, in a locked-down instance of its own.

    ``con`` is only read from (one transaction, fixed statements). InputError when a statement
    is not a pure SELECT, reaches outside the database, takes longer than ``timeout`` seconds or
    returns more than ``max_rows`` rows.
    """
    sandbox = duckdb.connect(":memory:", config=dict(_SANDBOX))
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        sandbox.interrupt()

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    try:
        _check(sandbox, sql)
        timer.start()
        _copy_named_tables(con, sandbox, sql)
        cur = sandbox.execute(sql)
        columns = [d[0] for d in cur.description or []]
        fetched = cur.fetchmany(max_rows + 1)
    except duckdb.InterruptException as exc:
        if expired.is_set():
            raise _problem(f"audit SQL stopped after {timeout:g} s (the statement time limit); "
                           "narrow the query or allow more time") from exc
        raise _problem(str(exc)) from exc
    except duckdb.PermissionException as exc:
        raise _read_only(f"files, URLs and extensions are out of its reach ({_first_line(exc)})") from exc
    except duckdb.Error as exc:
        raise _problem(str(exc)) from exc
    finally:
        timer.cancel()
        sandbox.close()
    if len(fetched) > max_rows:
        raise _problem(f"audit SQL returned more than {max_rows} rows (the row limit); "
                       "add LIMIT or aggregate, or allow more rows")
    return QueryResult(columns=columns, rows=[[_plain(v) for v in row] for row in fetched])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check(sandbox: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse, with the rule, any statement that is not a SELECT or that writes from inside one."""
    try:
        statements = sandbox.extract_statements(sql)
    except duckdb.Error as exc:
        raise _problem(str(exc)) from exc
    if not statements:
        raise _problem("no statement given")
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            raise _read_only(f"only SELECT statements are allowed, got {statement.type.name}")
        tree = _parse_tree(sandbox, statement.query)
        if tree is not None:
            _refuse_writes(tree)


def _parse_tree(sandbox: duckdb.DuckDBPyConnection, query: str) -> Any:
    """DuckDB's parse of one SELECT as JSON, or None when it cannot serialize it (the sandbox still holds)."""
    try:
        rows = sandbox.execute("SELECT json_serialize_sql(?)", [query]).fetchall()
    except duckdb.Error:
        return None
    if len(rows) != 1 or not isinstance(rows[0][0], str):
        return None
    tree = json.loads(rows[0][0])
    return None if not isinstance(tree, dict) or tree.get("error") else tree


def _refuse_writes(tree: Any) -> None:
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_QUERY_NODE"):  # INSERT/UPDATE/DELETE/MERGE in a WITH
            raise _read_only(f"{kind.removesuffix('_QUERY_NODE')} is not allowed, not even inside WITH")
        name = node.get("function_name")
        if node.get("class") == "FUNCTION" and isinstance(name, str) and name.lower() in _SEQUENCE_FUNCTIONS:
            raise _read_only(f"{name.lower()}() is not allowed (the appliance's sequences are not for queries)")
        pending.extend(node.values())


class _ArrowStream:
    """A relation of the source database as an Arrow C stream, for the sandbox to read once."""

    def __init__(self, relation: duckdb.DuckDBPyRelation) -> None:
        self._relation = relation

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return getattr(self._relation, "__arrow_c_stream__")(requested_schema)  # noqa: B009 - not in the stubs


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _names(sql: str, word: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(word)}(?![\w$])", sql, re.IGNORECASE) is not None


def _copy_named_tables(src: duckdb.DuckDBPyConnection, sandbox: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Copy the source tables that ``sql`` names into the sandbox, all from one snapshot."""
    try:
        src.execute("BEGIN TRANSACTION")
        own = True
    except duckdb.TransactionException:  # the caller's transaction is already one snapshot
        own = False
    try:
        listed = src.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
        tables: dict[str, list[str]] = {}
        for table, column in listed:
            tables.setdefault(str(table), []).append(str(column))
        for table in (t for family in FAMILIES for t in family.tables):
            columns = tables.get(table)  # a sequence (or a table not created yet) has no columns to copy
            if columns is None or not _names(sql, table):
                continue
            on_request = _ON_REQUEST.get(table, frozenset())
            keep = [c for c in columns if c not in on_request or _names(sql, c)]
            relation = src.sql(f"SELECT {', '.join(map(_quote, keep))} FROM main.{_quote(table)}")
            sandbox.register(_STAGING, _ArrowStream(relation))
            try:
                sandbox.execute(f"CREATE TABLE {_quote(table)} AS FROM {_STAGING}")
            finally:
                sandbox.unregister(_STAGING)
    finally:
        if own:
            with contextlib.suppress(duckdb.Error):
                src.execute("ROLLBACK")


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


class SqlRequest(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Body of ``POST /api/v1/audit/sql``."""

    sql: str
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = DEFAULT_MAX_ROWS
    """More rows than this is an error (``maxRows`` on the wire)."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = DEFAULT_TIMEOUT
    """Seconds the query may take."""


def decisions_page(con: duckdb.DuckDBPyConnection, flt: AuditFilter) -> QueryResult:
    """Decision rows matching ``flt`` in seq order, at most ``limit`` after ``after``, in their wire form."""
    page = audit_rows.decisions_page(con, flt)
    return QueryResult(columns=page.columns, rows=[[_plain(v) for v in row] for row in page.rows])


@contextlib.contextmanager
def writing_to(out: Path, *, force: bool = False) -> Iterator[Path]:
    """A temporary file beside ``out`` to write; it becomes ``out`` when the block succeeds.

    Without ``force`` an existing ``out`` is refused (the name is claimed first, atomically,
    so nothing is overwritten between the check and the move); with it, ``out`` is replaced
    (a symbolic link there is replaced, not followed). A directory is always refused.
    """
    if out.is_dir():
        raise InputError([Problem(source=str(out), path="", reason="is a directory; give a file name")])
    out.parent.mkdir(parents=True, exist_ok=True)
    claimed = False
    if not force:
        try:
            os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError as exc:
            raise InputError([Problem(source=str(out), path="",
                                      reason="already exists; pass --force to overwrite it")]) from exc
        claimed = True
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    part = Path(name)
    try:
        yield part
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        if claimed:
            out.unlink(missing_ok=True)
        raise
