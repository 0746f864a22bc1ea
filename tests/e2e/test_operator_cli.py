"""Operator commands work on the database file, and through a running appliance that holds it."""

from __future__ import annotations

import contextlib
import json
import smtplib
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from tests.dnsserver import serve_zone
from tests.e2e.harness import ApplianceProcess, write_config

POLICY = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]
[[senders]]
match = { domain = "held.example" }
action = "quarantine"
"""


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)


def send(port: int, sender: str, n: int) -> None:
    raw = (f"From: {sender}\r\nTo: agent@example.test\r\nSubject: cli {n}\r\n"
           f"Message-ID: <cli-{n}@x.example>\r\n\r\nhi\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client, contextlib.suppress(smtplib.SMTPDataError):
        client.sendmail(sender, ["agent@example.test"], raw.encode())  # a bounce is a decision too


def test_audit_and_quarantine_commands_while_running_and_after(tmp_path: Path) -> None:
    with serve_zone([]) as dns:
        config = write_config(tmp_path, policy=POLICY, nameservers=[dns.address])
        appliance = ApplianceProcess(config)
        with appliance:
            send(appliance.smtp_port, "a@example.net", 1)
            send(appliance.smtp_port, "z@stranger.example", 2)
            send(appliance.smtp_port, "h@held.example", 3)
            send(appliance.smtp_port, "h@held.example", 4)
            live = cli(config, "audit", "sql", "SELECT action, count(*) AS n FROM decisions GROUP BY ALL ORDER BY 1",
                       "--format", "json", env=appliance.env)
            assert live.returncode == 0, live.stderr
            assert json.loads(live.stdout) == [{"action": "accept", "n": 1}, {"action": "bounce", "n": 1},
                                               {"action": "quarantine", "n": 2}]
            assert cli(config, "audit", "verify", env=appliance.env).returncode == 0
            held = cli(config, "quarantine", "list", env=appliance.env)
            assert held.returncode == 0 and "(2 held)" in held.stdout
            first = held.stdout.split()[0]
            released = cli(config, "quarantine", "release", first, env=appliance.env)
            assert released.returncode == 0, released.stderr
            refused = cli(config, "audit", "sql", "DROP TABLE decisions", env=appliance.env)
            assert refused.returncode == 1 and "only SELECT" in refused.stderr
            assert appliance.terminate() == 0
    # The appliance is down: the same commands open the file themselves.
    offline = cli(config, "audit", "sql", "SELECT count(*) AS n FROM decisions", "--format", "csv")
    assert offline.stdout.splitlines() == ["n", "4"], offline.stderr
    second = cli(config, "quarantine", "list").stdout.split()[0]
    assert cli(config, "quarantine", "delete", second).returncode == 0
    assert "(0 held)" in cli(config, "quarantine", "list").stdout
    out = tmp_path / "audit.parquet"
    exported = cli(config, "audit", "export", "--format", "parquet", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert pq.read_table(out).num_rows == 4
    db = tmp_path / "var" / "appliance.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE decisions SET reason = 'edited' WHERE seq = 2")
    broken = cli(config, "audit", "verify")
    assert broken.returncode == 1 and "row 2" in broken.stderr
