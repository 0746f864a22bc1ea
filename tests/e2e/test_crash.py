"""SIGKILL at random moments loses nothing that got a 250 (product.md, durability promises)."""

from __future__ import annotations

import random
import smtplib
import threading
import time
from pathlib import Path

import duckdb

from appliance.audit import verify_chain
from tests.dnsserver import serve_zone
from tests.e2e.harness import ApplianceProcess, write_config

POLICY = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]
"""


def message(n: int) -> bytes:
    return (f"From: sender{n % 7}@example.net\r\nTo: agent@example.test\r\nSubject: crash test {n}\r\n"
            f"Message-ID: <crash-{n}@example.net>\r\n\r\nbody {n}\r\n").encode()


class Sender(threading.Thread):
    """Sends numbered messages until stopped; remembers which got a 250."""

    def __init__(self, port_of: list[int], first: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port_of, self.n, self.stop = port_of, first, stop
        self.acked: list[int] = []

    def run(self) -> None:
        deadline = time.monotonic() + 60  # bounded whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port_of[0], timeout=5) as client:
                    while not self.stop.is_set() and time.monotonic() < deadline:
                        n = self.n
                        self.n += 1
                        client.sendmail(f"sender{n % 7}@example.net", ["agent@example.test"], message(n))
                        self.acked.append(n)  # sendmail returned: the server said 250
            except (OSError, smtplib.SMTPException):
                time.sleep(0.02)  # the appliance is down or was killed mid-transaction: retry


def test_sigkill_at_random_moments_loses_no_acknowledged_message(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    stop = threading.Event()
    with serve_zone([("example.net", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")]) as dns:
        appliance = ApplianceProcess(write_config(tmp_path, policy=POLICY, nameservers=[dns.address]))
        senders = [Sender([appliance.smtp_port], first=i * 100_000, stop=stop) for i in range(3)]
        with appliance:
            for s in senders:
                s.start()
            for _ in range(4):
                time.sleep(rng.uniform(0.3, 1.2))
                appliance.kill()
                appliance.start()
            time.sleep(0.5)
            stop.set()
            for s in senders:
                s.join(15)
            assert appliance.terminate() == 0
    acked = sorted(n for s in senders for n in s.acked)
    print(f"{len(acked)} messages acknowledged across the kills")
    assert len(acked) > 100, f"only {len(acked)} messages got through between kills"
    with duckdb.connect(str(tmp_path / "var" / "appliance.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT message_id, count(*) FROM messages GROUP BY message_id").fetchall())
        decided = dict(con.execute("SELECT message_id, count(*) FROM decisions WHERE action = 'accept' "
                                   "GROUP BY message_id").fetchall())
        report = verify_chain(con)
    for n in acked:
        copies = stored.get(f"<crash-{n}@example.net>")
        assert copies == 1, f"message {n} got 250 but is stored {copies} times"
        assert decided.get(f"<crash-{n}@example.net>") == 1
    assert report.ok, report.detail
