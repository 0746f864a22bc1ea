"""``appliance deliveries retry``: a pending delivery is attempted now; and a closed stdout pipe is not an error."""

from __future__ import annotations

import base64
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
from appliance.store.database import Database
from tests.api.server import serve
from tests.conftest import AGENT, POLICY
from tests.delivery.conftest import message
from tests.delivery.receiver import WebhookReceiver, free_port

TOKEN = "retry-admin-token"
SECRET = "whsec_" + base64.b64encode(b"retry-test-secret-0123456789abcd").decode()
HOUR = 3600.0


def write_config(tmp_path: Path, webhook_url: str = "http://127.0.0.1:9/hook") -> Path:
    (tmp_path / "policy.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    path.write_text(f"""
mode = "stalwart"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{free_port()}"
admin_token_env = "TEST_RETRY_ADMIN_TOKEN"
[dns]
offline = true
[[agents]]
address = "{AGENT}"
policy = "policy.toml"
webhook_url = "{webhook_url}"
webhook_secret_env = "TEST_RETRY_WEBHOOK_SECRET"
""")
    return path


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_RETRY_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_RETRY_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)


def seed(db: Database, n: int, status: str = "pending", *, due_in: float = HOUR) -> str:
    """A delivery that has failed 3 times and waits ``due_in`` seconds for its next attempt."""
    data = message(n)

    def write(con: duckdb.DuckDBPyConnection) -> str:
        delivery_id = enqueue(con, agent=AGENT, event_type="message.received", data=data, email_id=data.email_id,
                              decision_id=data.decision_id, now=time.time())
        con.execute("UPDATE deliveries SET status = ?, attempts = 3, last_status = 500, next_attempt_at = ? "
                    "WHERE delivery_id = ?", [status, time.time() + due_in, delivery_id])
        return delivery_id

    return db.write_sync(write)


def test_retry_makes_a_pending_delivery_due_now_on_the_file(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config_file = write_config(tmp_path)
    db = Database(tmp_path / "var" / "appliance.duckdb")
    waiting = seed(db, 1)
    dead = seed(db, 2, "dead")
    delivered = seed(db, 3, "delivered")
    db.close()
    cfg = ["--config", str(config_file)]
    before = time.time()

    assert main(["deliveries", "retry", waiting, *cfg]) == 0
    assert capsys.readouterr().out == f"{waiting}: pending, next attempt now\n"

    assert main(["deliveries", "retry", dead, delivered, "msg_nope", *cfg]) == 1
    err = capsys.readouterr().err
    assert f"delivery {dead} is dead; replay it to send it again" in err
    assert f"delivery {delivered} is delivered; only pending ones are retried" in err
    assert "no delivery msg_nope" in err

    with duckdb.connect(str(tmp_path / "var" / "appliance.duckdb"), read_only=True) as con:
        rows = dict(con.execute("SELECT delivery_id, next_attempt_at FROM deliveries").fetchall())
        events = con.execute("SELECT agent, detail FROM events WHERE type = 'delivery.retried'").fetchall()
    assert before <= rows[waiting] <= time.time()
    assert rows[dead] > time.time() + HOUR / 2  # the refused ones are untouched
    assert events == [(AGENT, f"{waiting} (pending, 3 attempt(s)) retried now by cli")]


def cli(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "deliveries", *args, "--config", str(config_file)],
                          capture_output=True, text=True, timeout=60, env={**os.environ}, cwd=config_file.parent)


def test_retry_through_the_running_appliance_sends_at_once(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        config_file = write_config(tmp_path, receiver.url)
        config = load_config(config_file)
        with serve(config, port=int(config.http.listen.rpartition(":")[2])) as served:
            waiting = seed(served.runtime.db, 1)
            time.sleep(0.3)
            assert receiver.requests == []  # an hour away
            retried = cli(config_file, "retry", waiting)
            assert retried.returncode == 0, retried.stderr
            assert retried.stdout == f"{waiting}: pending, next attempt now\n"
            deadline = time.monotonic() + 10
            while not receiver.requests and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [r.headers["webhook-id"] for r in receiver.requests] == [waiting]
            refused = cli(config_file, "retry", "msg_nope")
            assert refused.returncode == 1 and "no delivery msg_nope" in refused.stderr
            by_api = served.runtime.db.read_sync(lambda con: con.execute(
                "SELECT count(*) FROM events WHERE type = 'delivery.retried' AND detail LIKE '%by api'").fetchone())
            assert by_api == (1,)


def seeded_file(tmp_path: Path, n: int) -> Path:
    config_file = write_config(tmp_path)
    db = Database(tmp_path / "var" / "appliance.duckdb")
    for i in range(n):
        seed(db, i)
    db.close()
    return config_file


def test_a_reader_that_went_away_is_not_a_traceback(tmp_path: Path) -> None:
    config_file = seeded_file(tmp_path, 3)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write is EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "appliance", "deliveries", "list", "--config", str(config_file)],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1


def test_deliveries_list_piped_into_head(tmp_path: Path) -> None:
    config_file = seeded_file(tmp_path, 1000)  # ~100 KB of table: more than a pipe holds
    done = subprocess.run(["bash", "-c", f'"{sys.executable}" -m appliance deliveries list --limit 1000 '
                                         f'--config "{config_file}" | head -1'],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["SEQ", "DELIVERY", "ID", "AGENT", "TYPE", "STATUS", "TRIES", "LAST", "NEXT",
                                   "ATTEMPT", "(UTC)"]
    assert done.stderr == ""
