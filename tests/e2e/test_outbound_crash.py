"""SIGKILL of the outbound worker at random moments: every message is delivered at least once, and none
that the peer answered 250 for and we recorded is ever sent again (product.md, durability promises).

The only duplicates allowed are those of the window SMTP cannot close (RFC 1047): the final dot was
sent, and the process died before it had committed the peer's 250 (the peer here takes up to 40 ms to
answer, as a real one scanning the message does, and takes the message even when the client is gone
by then). Each kill can make at most one per attempt in flight; a copy that reaches the peer after
we recorded the message sent is a bug.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from appliance.outbound.queue import enqueue
from appliance.store.database import Database
from tests.outbound.conftest import outbound
from tests.outbound.peer import Peer

MESSAGES = 60
KILLS = 4
CONCURRENCY = 4
ROOT = Path(__file__).resolve().parents[2]


def _queue(path: Path) -> None:
    db = Database(path)
    try:
        now = time.time()
        for n in range(MESSAGES):
            db.write_batch_sync(lambda batch, n=n: enqueue(batch, outbound(n, [f"rcpt{n}@example.org"]), now=now))
    finally:
        db.close()


def _start(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.outbound.crash_worker", str(path), str(port)],
                                stdout=out, stderr=out, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_sigkill_at_random_moments_never_resends_what_was_recorded_sent(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    path = tmp_path / "var" / "appliance.duckdb"
    log = tmp_path / "worker.log"
    _queue(path)
    with Peer() as peer:
        peer.script.data_delay = lambda: rng.uniform(0.0, 0.04)  # kills land while answers are awaited
        killed_in_flight = 0
        for _ in range(KILLS):
            before = len(peer.messages())
            proc = _start(path, peer.port, log)
            deadline = time.monotonic() + 30
            while len(peer.messages()) < before + rng.randint(2, 8) and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_in_flight += 1
        final = _start(path, peer.port, log)
        assert final.wait(60) == 0, log.read_text()[-3000:]
        got = peer.messages()

    with duckdb.connect(str(path), read_only=True) as con:
        jobs = con.execute("SELECT j.email_id, m.message_id, j.status, j.finished_at FROM outbound_jobs j "
                           "JOIN outbound_messages m USING (email_id)").fetchall()
        sent_events = con.execute("SELECT count(*) FROM deliveries WHERE event_type = 'message.sent'").fetchone()
    assert len(jobs) == MESSAGES and {status for _, _, status, _ in jobs} == {"sent"}
    assert sent_events == (MESSAGES,), "one message.sent per job, committed with it"
    copies: dict[str, list[float]] = {}
    for g in got:
        assert g.message_id is not None
        copies.setdefault(g.message_id, []).append(g.at)
    duplicates = 0
    for _, message_id, _, recorded_at in jobs:
        times = copies.get(message_id, [])
        assert times, f"{message_id} was never delivered"
        late = [t for t in times if t > recorded_at]
        assert not late, f"{message_id} was recorded sent at {recorded_at} and sent again at {late}"
        duplicates += len(times) - 1
    print(f"{len(got)} deliveries of {MESSAGES} messages across {KILLS} kills; {duplicates} duplicate(s) "
          "from the 250-to-commit window")
    assert duplicates <= killed_in_flight * CONCURRENCY
