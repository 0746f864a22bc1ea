"""``appliance deliveries``: on the database file when the appliance is down, through its API when up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from appliance.cli import main
from appliance.config import load_config
from appliance.delivery.jobs import enqueue
from appliance.store.database import Database, utc
from tests.api.server import serve
from tests.conftest import AGENT, POLICY
from tests.delivery.conftest import message
from tests.delivery.receiver import free_port

TOKEN = "cli-admin-token"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_CLI_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    (tmp_path / "policy.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    path.write_text(f"""
mode = "stalwart"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{free_port()}"
admin_token_env = "TEST_CLI_ADMIN_TOKEN"
[dns]
offline = true
[[agents]]
address = "{AGENT}"
policy = "policy.toml"
webhook_url = "http://127.0.0.1:9/hook"
webhook_secret_env = "TEST_CLI_WEBHOOK_SECRET"
""")
    return path


def seed(db: Database, n: int, status: str) -> str:
    data = message(n)

    def write(con: duckdb.DuckDBPyConnection) -> str:
        delivery_id = enqueue(con, agent=AGENT, event_type="message.received", data=data, email_id=data.email_id,
                              decision_id=data.decision_id, now=time.time())
        con.execute("UPDATE deliveries SET status = ?, attempts = 10, last_status = 500 WHERE delivery_id = ?",
                    [status, delivery_id])
        return delivery_id

    return db.write_sync(write)


def test_local_list_show_replay_enable(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = Database(config_file.parent / "var" / "appliance.duckdb")
    dead = seed(db, 1, "dead")
    delivered = seed(db, 2, "delivered")
    db.write_sync(lambda con: con.execute("INSERT INTO endpoints VALUES (?, ?, '410')", [AGENT, utc()]))
    db.close()
    cfg = ["--config", str(config_file)]

    assert main(["deliveries", "list", *cfg]) == 0
    out = capsys.readouterr().out
    assert dead in out and delivered in out and "STATUS" in out
    assert main(["deliveries", "list", "--status", "dead", "--json", *cfg]) == 0
    assert [d["deliveryId"] for d in json.loads(capsys.readouterr().out)] == [dead]
    assert main(["deliveries", "show", dead, *cfg]) == 0
    assert "DISABLED" in capsys.readouterr().out

    assert main(["deliveries", "replay", dead, delivered, *cfg]) == 1
    captured = capsys.readouterr()
    assert f"{dead}: pending" in captured.out
    assert "only dead or failed" in captured.err and f"deliveries enable {AGENT}" in captured.err
    assert main(["deliveries", "enable", AGENT, *cfg]) == 0
    assert "enabled" in capsys.readouterr().out
    assert main(["deliveries", "show", "msg_nope", *cfg]) == 1
    assert "no delivery msg_nope" in capsys.readouterr().err

    db = Database(config_file.parent / "var" / "appliance.duckdb")
    try:
        assert db.read_sync(lambda con: con.execute(
            "SELECT status, round_start FROM deliveries WHERE delivery_id = ?", [dead]).fetchone()) == ("pending", 10)
        assert db.read_sync(lambda con: con.execute(
            "SELECT disabled_at FROM endpoints WHERE agent = ?", [AGENT]).fetchone()) == (None,)
    finally:
        db.close()


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "deliveries", *args, "--config", str(config_file)],
                          capture_output=True, text=True, timeout=60, env={**os.environ},
                          cwd=config_file.parent)


def test_through_the_running_appliance(config_file: Path) -> None:
    config = load_config(config_file)
    with serve(config, port=int(config.http.listen.rpartition(":")[2])) as served:
        dead = seed(served.runtime.db, 1, "dead")
        listed = cli(config_file, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [d["deliveryId"] for d in json.loads(listed.stdout)] == [dead]
        replayed = cli(config_file, "replay", dead)
        assert replayed.returncode == 0, replayed.stderr
        assert f"{dead}: pending" in replayed.stdout
        replays = served.runtime.db.read_sync(lambda con: con.execute(
            "SELECT count(*) FROM events WHERE type = 'delivery.replayed' AND detail LIKE '%by api'").fetchone())
        assert replays == (1,)


def test_a_wrong_admin_token_is_reported(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(config_file)
    with serve(config, port=int(config.http.listen.rpartition(":")[2])):
        monkeypatch.setenv("TEST_CLI_ADMIN_TOKEN", "wrong")
        result = cli(config_file, "list")
    assert result.returncode == 1 and "refused the admin token" in result.stderr
