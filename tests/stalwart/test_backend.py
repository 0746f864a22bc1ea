"""What both backends share: Stalwart's environment, and its output forwarded into our log."""

from __future__ import annotations

import json
import logging

import pytest

from appliance.config import ApplianceConfig, StalwartConfig
from appliance.logs import JsonFormatter
from appliance.stalwart.backend import BackendError, RunStatus, forward_line, stalwart_environment


def config(**stalwart: object) -> ApplianceConfig:
    return ApplianceConfig(hostname="mx.example.test", stalwart=StalwartConfig(**stalwart))  # type: ignore[arg-type]


def test_the_environment_pins_the_recovery_admin_and_the_hostname() -> None:
    env = stalwart_environment(config(environment={"EXTRA": "1"}, admin_login="root"),
                               {"STALWART_ADMIN_SECRET": " s3cret "})
    assert env == {"EXTRA": "1", "STALWART_RECOVERY_ADMIN": "root:s3cret", "STALWART_HOSTNAME": "mx.example.test"}


def test_the_public_url_is_passed_when_set() -> None:
    env = stalwart_environment(config(public_url="https://mail.example.test", admin_secret_env="MY_SECRET"),
                               {"MY_SECRET": "x"})
    assert env["STALWART_PUBLIC_URL"] == "https://mail.example.test"


def test_our_variables_win_over_the_configured_environment() -> None:
    env = stalwart_environment(config(environment={"STALWART_RECOVERY_ADMIN": "evil:x"}),
                               {"STALWART_ADMIN_SECRET": "good"})
    assert env["STALWART_RECOVERY_ADMIN"] == "admin:good"


def test_an_unset_admin_secret_is_an_error_naming_the_variable() -> None:
    with pytest.raises(BackendError, match=r"stalwart.admin_secret_env: environment variable MY_SECRET is not set"):
        stalwart_environment(config(admin_secret_env="MY_SECRET"), {"MY_SECRET": "  "})


def test_a_json_line_keeps_its_fields_its_level_and_its_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance.stalwart")
    forward_line(json.dumps({"level": "warn", "msg": "queue full", "queue": 7}) + "\n")
    [record] = caplog.records
    assert record.name == "appliance.stalwart"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "queue full"
    assert record.stalwart == {"level": "warn", "msg": "queue full", "queue": 7}  # type: ignore[attr-defined]


def test_a_json_line_with_fields_named_like_a_log_record_attribute_is_still_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    forward_line('{"message": "hello", "name": "x", "args": [1]}')
    [record] = caplog.records
    assert record.getMessage() == "hello" and record.name == "appliance.stalwart"


def test_a_text_line_is_logged_as_its_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    forward_line("2026-12-03T09:00:00Z INFO Listening on 0.0.0.0:25\r\n", "stderr")
    forward_line('{"not": "closed"')
    forward_line("[1, 2]")
    assert [r.getMessage() for r in caplog.records] == [
        "2026-12-03T09:00:00Z INFO Listening on 0.0.0.0:25", '{"not": "closed"', "[1, 2]"]
    assert caplog.records[0].levelno == logging.WARNING  # stderr
    assert caplog.records[1].stalwart == {"stream": "stdout"}  # type: ignore[attr-defined]


def test_blank_lines_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="appliance.stalwart")
    forward_line("  \n")
    assert caplog.records == []


def test_a_forwarded_line_is_one_json_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    forward_line('{"level": "info", "msg": "ready", "listener": "smtp"}')
    entry = json.loads(JsonFormatter().format(caplog.records[0]))
    assert (entry["logger"], entry["level"], entry["msg"]) == ("appliance.stalwart", "info", "ready")
    assert entry["stalwart"]["listener"] == "smtp"  # Stalwart's own fields reach our line


def test_an_exit_is_described_by_its_code_and_detail() -> None:
    assert RunStatus(running=False, exit_code=137, detail="OOM killed").describe() == "exit code 137, OOM killed"
    assert RunStatus(running=False).describe() == "not running"
