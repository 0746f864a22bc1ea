"""Audit history over HTTP: filtered listing, read-only SQL, chain verification, export."""

from __future__ import annotations

__all__ = ["AuditController"]

from datetime import UTC, datetime
from pathlib import Path

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.params import FromQuery, JSONBody

from appliance.api.auth import admin_guard
from appliance.audit import VerifyReport, verify_chain
from appliance.audit.query import (
    AuditFilter,
    ExportRequest,
    ExportResult,
    QueryResult,
    SqlRequest,
    decisions_page,
    export_parquet,
    readonly_sql,
)
from appliance.errors import InputError
from appliance.runtime import Runtime


class AuditController(Controller):
    path = "/api/v1/audit"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_decisions(self, state: State, since: FromQuery[datetime | None] = None,
                             until: FromQuery[datetime | None] = None, action: FromQuery[str | None] = None,
                             sender: FromQuery[str | None] = None, agent: FromQuery[str | None] = None,
                             after: FromQuery[int] = 0, limit: FromQuery[int] = 100) -> QueryResult:
        """Decision rows in order; pass the last ``seq`` seen as ``after`` for the next page."""
        runtime: Runtime = state.runtime
        flt = AuditFilter(since=_naive_utc(since), until=_naive_utc(until), action=action, sender=sender,
                          agent=agent, after=after, limit=limit)
        return await runtime.db.read(lambda con: decisions_page(con, flt))

    @post("/sql", status_code=200)
    async def sql(self, state: State, data: JSONBody[SqlRequest]) -> QueryResult:
        """Run read-only SQL over the audit tables."""
        runtime: Runtime = state.runtime
        try:
            return await runtime.db.read(lambda con: readonly_sql(con, data.sql))
        except InputError as exc:
            raise ClientException(str(exc)) from exc

    @get("/verify")
    async def verify(self, state: State) -> VerifyReport:
        """Walk every hash chain; ``ok`` false names the first broken row."""
        runtime: Runtime = state.runtime
        return await runtime.db.read(verify_chain)

    @post("/export", status_code=200)
    async def export(self, state: State, data: JSONBody[ExportRequest]) -> ExportResult:
        """Write the decisions to a Parquet file on the appliance's disk."""
        runtime: Runtime = state.runtime
        out = Path(data.out)
        rows = await runtime.db.read(lambda con: export_parquet(con, out))
        return ExportResult(out=str(out), rows=rows)


def _naive_utc(moment: datetime | None) -> datetime | None:
    """Timestamps are kept naive in UTC; a query may give any offset."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
