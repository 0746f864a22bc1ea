"""``appliance audit sql|verify|export``: the audit history, whether or not the appliance runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.audit import VerifyReport, verify_chain
from appliance.audit.query import ExportResult, QueryResult, export_parquet, format_result, readonly_sql
from appliance.cli import backend


def register(groups: Any) -> None:
    audit = groups.add_parser("audit", help="query, verify and export the audit log (DuckDB)")
    sub = audit.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sql = sub.add_parser("sql", help="run read-only SQL over the audit tables")
    backend.add_config_argument(sql)
    sql.add_argument("query", help='e.g. "SELECT action, count(*) FROM decisions GROUP BY action"')
    sql.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sql.set_defaults(handler=run_sql)

    verify = sub.add_parser("verify", help="walk the hash chains; exit 1 when a row was tampered with")
    backend.add_config_argument(verify)
    verify.set_defaults(handler=run_verify)

    export = sub.add_parser("export", help="write the decisions to a Parquet file")
    backend.add_config_argument(export)
    export.add_argument("--format", choices=["parquet"], default="parquet")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(handler=run_export)


@backend.reports_failures
def run_sql(args: argparse.Namespace) -> int:
    result = backend.run(
        backend.load(args),
        local=lambda con: readonly_sql(con, args.query),
        remote=lambda api: api.post("/api/v1/audit/sql", json={"sql": args.query}, into=QueryResult),
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
    rows = backend.run(backend.load(args), local=lambda con: export_parquet(con, out),
                       remote=lambda api: api.post("/api/v1/audit/export", json={"out": str(out)},
                                                   into=ExportResult).rows)
    print(f"wrote {rows} decision row(s) to {out}")
    return 0
