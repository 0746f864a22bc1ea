"""Each mode mounts its own routes and starts its own intake (appliance.modes)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import aiosmtplib
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.modes.mode import Mode
from appliance.modes.sandbox import SandboxMode
from appliance.modes.stalwart import StalwartMode
from tests.delivery.receiver import free_port
from tests.reports.samples import google, gzipped, report_message

HOOK_BODY = b'{"context": {}, "envelope": {}, "message": {}}'


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_sandbox_mode_serves_smtp_and_not_the_mta_hook(make_config: Callable[..., ApplianceConfig]) -> None:
    port = free_port()
    app = create_app(make_config(mode="sandbox", smtp={"listen": f"127.0.0.1:{port}"}))
    assert [type(p) for p in app.plugins.init if isinstance(p, Mode)] == [SandboxMode]
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert _listening(port)
        assert (await client.post("/hooks/mta", content=HOOK_BODY)).status_code in (404, 405)
    assert not _listening(port)  # stopped with the app


async def test_stalwart_mode_serves_the_hook_and_runs_no_smtp_server(
        make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", "hook-secret")
    port = free_port()
    config = make_config(mode="stalwart", smtp={"listen": f"127.0.0.1:{port}"},
                         hook={"secret_env": "TEST_HOOK_SECRET"})
    app = create_app(config)
    assert [type(p) for p in app.plugins.init if isinstance(p, Mode)] == [StalwartMode]
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert not _listening(port)
        hook = await client.post("/hooks/mta", content=HOOK_BODY)
        assert hook.status_code == 401  # mounted: it asks for Stalwart's secret before anything else


async def test_handlers_get_their_parts_by_injection_and_a_stopped_part_is_a_503(
        make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    app = create_app(make_config())
    admin = {"Authorization": "Bearer admin-secret"}
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/api/v1/quarantine/", headers=admin)).status_code == 200
        runtime = app.state.runtime
        dispatcher, runtime.dispatcher = runtime.dispatcher, None
        try:
            answer = await client.post("/api/v1/tokens/introspect", headers=admin, json={"token": "x"})
            assert answer.status_code == 503 and "dispatcher" in answer.text
        finally:
            runtime.dispatcher = dispatcher


async def test_sandbox_mode_takes_dmarc_reports_at_the_report_address(
        make_config: Callable[..., ApplianceConfig]) -> None:
    port = free_port()
    config = make_config(mode="sandbox", smtp={"listen": f"127.0.0.1:{port}"})
    raw = report_message(gzipped(google().encode()), "application/gzip").replace(b"\n", b"\r\n")
    app = create_app(config)
    async with AsyncTestClient(app=app):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            _, reply = await smtp.sendmail("noreply-dmarc-support@google.com", ["dmarc-reports@example.test"], raw)
        assert "Report kept" in reply
        runtime = app.state.runtime
        kept = await runtime.db.read(lambda con: con.execute("SELECT org_name FROM dmarc_reports").fetchall())
        assert kept == [("google.com",)]
