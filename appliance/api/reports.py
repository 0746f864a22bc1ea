"""DMARC aggregate reports over HTTP: who sends as our domains, and how it fares (admin)."""

from __future__ import annotations

__all__ = ["ReportController"]

from datetime import UTC, datetime

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromQuery

from appliance.api.auth import admin_guard
from appliance.store.database import Database
from appliance.store.reports import SenderSummary, summary


class ReportController(Controller):
    path = "/api/v1/reports"
    guards = [admin_guard]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/dmarc")
    async def dmarc(self, db: NamedDependency[Database],
                    since: FromQuery[datetime | None] = None) -> list[SenderSummary]:
        """Per claimed From domain and source IP: messages, DKIM/SPF/DMARC pass and fail, dispositions,
        over the reports whose period ends at or after ``since`` (all when absent)."""
        moment = since.astimezone(UTC).replace(tzinfo=None) if since is not None and since.tzinfo else since
        return await db.read(lambda con: summary(con, moment))
