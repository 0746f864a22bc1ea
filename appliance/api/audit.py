"""Audit history over HTTP: filtered listing, read-only SQL, chain verification, export.

SQL runs in an instance of its own over a snapshot (``appliance.audit.query``). The export is
the response body (a Parquet file): nothing is written on the appliance's disk at a path the
caller names, so no caller can overwrite a file there.
"""

from __future__ import annotations

__all__ = ["AuditController"]

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from litestar import Controller, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.params import FromQuery, JSONBody
from litestar.response import File

from appliance.api.auth import admin_guard
from appliance.audit import VerifyReport, verify_chain
from appliance.audit.query import (
    EXPORT_MEDIA_TYPE,
    EXPORT_ROWS_HEADER,
    AuditFilter,
    QueryResult,
    SqlRequest,
    decisions_page,
    export_parquet,
    readonly_sql,
)
from appliance.errors import InputError
from appliance.store.database import Database


class AuditController(Controller):
    path = "/api/v1/audit"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/")
    async def list_decisions(self, db: NamedDependency[Database], since: FromQuery[datetime | None] = None,
                             until: FromQuery[datetime | None] = None, action: FromQuery[str | None] = None,
                             sender: FromQuery[str | None] = None, agent: FromQuery[str | None] = None,
                             after: FromQuery[int] = 0, limit: FromQuery[int] = 100) -> QueryResult:
        """Decision rows in order; pass the last ``seq`` seen as ``after`` for the next page."""
        flt = AuditFilter(since=_naive_utc(since), until=_naive_utc(until), action=action, sender=sender,
                          agent=agent, after=after, limit=limit)
        return await db.read(lambda con: decisions_page(con, flt))

    @post("/sql", status_code=200)
    async def sql(self, db: NamedDependency[Database], data: JSONBody[SqlRequest]) -> QueryResult:
        """Run read-only SQL over a snapshot of the appliance's tables (400 names the rule a query broke)."""
        try:
            return await db.read(
                lambda con: readonly_sql(con, data.sql, max_rows=data.max_rows, timeout=data.timeout))
        except InputError as exc:
            raise ClientException(str(exc)) from exc

    @get("/verify")
    async def verify(self, db: NamedDependency[Database]) -> VerifyReport:
        """Walk every hash chain; ``ok`` false names the first broken row."""
        return await db.read(verify_chain)

    @post("/export", status_code=200, media_type=EXPORT_MEDIA_TYPE)
    async def export(self, db: NamedDependency[Database]) -> File:
        """Every decision row as a Parquet file, in the response body (row count in ``x-audit-rows``)."""
        directory = Path(tempfile.mkdtemp(prefix="appliance-export-"))
        out = directory / "decisions.parquet"
        try:
            rows = await db.read(lambda con: export_parquet(con, out))
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return File(path=out, filename="decisions.parquet", media_type=EXPORT_MEDIA_TYPE,
                    headers={EXPORT_ROWS_HEADER: str(rows)},
                    background=BackgroundTask(shutil.rmtree, directory, ignore_errors=True))


def _naive_utc(moment: datetime | None) -> datetime | None:
    """Timestamps are kept naive in UTC; a query may give any offset."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
