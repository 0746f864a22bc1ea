"""``appliance audit sql|export`` on the closed file (in-process) and through a running appliance."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from appliance.audit import append_decision
from appliance.cli import main
from appliance.store.database import Database
from tests.audit.test_chain import record
from tests.e2e.harness import ApplianceProcess, write_config

POLICY = 'defaultAction = "bounce"\n[[senders]]\nmatch = { domain = "example.net" }\n'


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A configuration whose (closed) database holds three decisions."""
    path = write_config(tmp_path, policy=POLICY)
    db = Database(tmp_path / "var" / "appliance.duckdb")
    for i in range(3):
        db.write_batch_sync(lambda b, i=i: append_decision(b, record(i)))
    db.close()
    return path


def cli(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def count(config: Path) -> int:
    with duckdb.connect(str(config.parent / "var" / "appliance.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM decisions").fetchall()
    return int(rows[0][0])


@pytest.mark.parametrize("template", [
    "SELECT * FROM read_text('{secret}')", "SELECT * FROM read_csv('{secret}')", "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM glob('{dir}/*')", "SELECT * FROM read_parquet('{secret}')", "SELECT * FROM read_json('{secret}')",
    "SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    "ATTACH '{secret}' AS stolen", "COPY decisions TO '{dir}/copied.csv'", "INSTALL httpfs", "LOAD httpfs",
    "WITH x AS (DELETE FROM decisions RETURNING *) SELECT * FROM x", "SELECT nextval('delivery_seq')",
])
def test_offline_sql_refuses_with_one_clear_line(config: Path, capsys: pytest.CaptureFixture[str],
                                                 template: str) -> None:
    secret = config.parent / "secret.txt"
    secret.write_text("the-secret-content\n")
    assert cli(config, "audit", "sql", template.format(secret=secret, dir=config.parent)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sql: audit SQL is read-only: "), captured.err
    assert "the-secret-content" not in captured.out + captured.err
    assert not (config.parent / "copied.csv").exists()
    assert count(config) == 3


def test_offline_sql_limits(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "audit", "sql", "SELECT * FROM range(5)", "--max-rows", "4") == 2
    assert "more than 4 rows" in capsys.readouterr().err
    assert cli(config, "audit", "sql", "SELECT count(*) FROM range(1000000000000)", "--timeout", "0.3") == 2
    assert "time limit" in capsys.readouterr().err
    assert cli(config, "audit", "sql", "SELECT count(*) AS n FROM decisions", "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines() == ["n", "3"]


def test_offline_export_never_overwrites_without_force(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = config.parent / "exports" / "audit.parquet"  # the directory is created
    assert cli(config, "audit", "export", "--out", str(out)) == 0
    assert pq.read_table(out).num_rows == 3
    out.write_bytes(b"an earlier export")
    assert cli(config, "audit", "export", "--out", str(out)) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export"
    assert cli(config, "audit", "export", "--out", str(out), "--force") == 0
    assert pq.read_table(out).num_rows == 3
    assert cli(config, "audit", "export", "--out", str(out.parent), "--force") == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["audit.parquet"]  # no temporary file left


def test_failed_export_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, policy=POLICY)  # no database yet
    out = tmp_path / "audit.parquet"
    assert cli(config, "audit", "export", "--out", str(out)) == 1
    assert "no database yet" in capsys.readouterr().err
    assert list(tmp_path.glob("*audit.parquet*")) == []


@pytest.fixture
def running(tmp_path: Path) -> Iterator[ApplianceProcess]:
    appliance = ApplianceProcess(write_config(tmp_path, policy=POLICY))
    with appliance:
        yield appliance


def run_cli(appliance: ApplianceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--config", str(appliance.config)],
                          capture_output=True, text=True, timeout=60, env=appliance.env)


def test_through_the_running_appliance(running: ApplianceProcess, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-content\n")
    for query in (f"SELECT * FROM read_text('{secret}')", "WITH x AS (DELETE FROM events RETURNING *) SELECT 1",
                  "LOAD httpfs"):
        refused = run_cli(running, "audit", "sql", query)
        assert refused.returncode == 1 and "audit SQL is read-only" in refused.stderr, refused.stderr
        assert "the-secret-content" not in refused.stdout + refused.stderr
    capped = run_cli(running, "audit", "sql", "SELECT * FROM range(5)", "--max-rows", "4")
    assert capped.returncode == 1 and "more than 4 rows" in capped.stderr
    out = tmp_path / "remote.parquet"
    exported = run_cli(running, "audit", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "wrote 0 decision row(s)" in exported.stdout and pq.read_table(out).num_rows == 0
    again = run_cli(running, "audit", "export", "--out", str(out))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert run_cli(running, "audit", "export", "--out", str(out), "--force").returncode == 0
