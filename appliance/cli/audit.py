"""``appliance audit sql|verify|export``: the audit history, whether or not the appliance runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.audit import VerifyReport, verify_chain
from appliance.audit.query import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT,
    EXPORT_ROWS_HEADER,
    QueryResult,
    export_parquet,
    format_result,
    readonly_sql,
    writing_to,
)
from appliance.cli import backend


def register(groups: Any) -> None:
    audit = groups.add_parser("audit", help="query, verify and export the audit log (DuckDB)")
    sub = audit.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sql = sub.add_parser("sql", help="run read-only SQL over a snapshot of the appliance's tables")
    backend.add_config_argument(sql)
    sql.add_argument("query", help='e.g. "SELECT action, count(*) FROM decisions GROUP BY action"')
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sql.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                     help=f"more rows than this is an error (default {DEFAULT_MAX_ROWS})")
    sql.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                     help=f"seconds the query may take (default {DEFAULT_TIMEOUT:g})")
    sql.set_defaults(handler=run_sql)

    verify = sub.add_parser("verify", help="walk the hash chains; exit 1 when a row was tampered with")
    backend.add_config_argument(verify)
    verify.set_defaults(handler=run_verify)

    export = sub.add_parser("export", help="write the decisions to a Parquet file")
    backend.add_config_argument(export)
    export.add_argument("--format", choices=["parquet"], default="parquet")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    export.set_defaults(handler=run_export)


@backend.reports_failures
def run_sql(args: argparse.Namespace) -> int:
    body = {"sql": args.query, "maxRows": args.max_rows, "timeout": args.timeout}
    result = backend.run(
        backend.load(args),
        local=lambda con: readonly_sql(con, args.query, max_rows=args.max_rows, timeout=args.timeout),
        remote=lambda api: api.post("/api/v1/audit/sql", json=body, into=QueryResult),
        api_timeout=args.timeout + 30.0,
    )
    print(format_result(result, args.format))
    return 0


@backend.reports_failures
def run_verify(args: argparse.Namespace) -> int:
    report = backend.run(backend.load(args), local=verify_chain,
                         remote=lambda api: api.get("/api/v1/audit/verify", into=VerifyReport))
    if report.ok:
        print(f"ok: {report.rows} row(s) in {report.agents} chain(s) verify")
        return 0
    print(f"BROKEN: {report.detail} (decision {report.broken_decision_id or '-'})", file=sys.stderr)
    return 1


@backend.reports_failures
def run_export(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    config = backend.load(args)

    def download(api: backend.AdminApi, part: Path) -> int:
        headers = api.download("POST", "/api/v1/audit/export", part)
        return int(headers.get(EXPORT_ROWS_HEADER, "0"))

    with writing_to(out, force=args.force) as part:  # the same refusal to overwrite either way
        rows = backend.run(config, local=lambda con: export_parquet(con, part),
                           remote=lambda api: download(api, part))
    print(f"wrote {rows} decision row(s) to {out}")
    return 0
