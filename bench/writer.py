"""The database writer's cost per commit, by statement (a micro-benchmark, never a test).

Each commit holds K messages as the SMTP intake writes them: one audit row
(``append_decision``), one stored message (``save_message``) and one
delivery job (``enqueue``), sometimes limit charges. The commit runs
``Database._commit`` on a cursor of its own (the writer thread stays idle), the
cursor wrapped so each statement's CPU (this thread's) and wall time is
recorded; a commit's fsync shows in COMMIT's wall time, not in its CPU.
Process CPU per commit is also given: DuckDB may hand work to its own threads.

    .venv/bin/python bench/writer.py                 # K = 1, 8, 32 at 2.7 KB
    .venv/bin/python bench/writer.py -k 1 --size 1000000 --commits 200

Bounded: ``--commits`` per K (after ``--warmup``), and ``--seconds`` per K.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, and its dkim.py would shadow dkimpy: last, then.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.audit import DecisionRecord, append_decision
from appliance.delivery.jobs import enqueue
from appliance.gate.decision import LimitCharge
from appliance.sdk import Auth, MessageData
from appliance.store.database import Batch, Database, _Job, utc
from appliance.store.limits import PersistentLimits
from appliance.store.messages import INBOX, StoredMessage, save_message

_WORDS = re.compile(r"\s*(\w+)(?:\s+(?:INTO|FROM|TABLE)?\s*(\w+))?", re.IGNORECASE)


class Costs:
    """CPU (this thread) and wall time per label, summed over one commit, then kept per commit."""

    def __init__(self) -> None:
        self.current: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.commits: list[dict[str, list[float]]] = []

    def add(self, label: str, cpu: float, wall: float) -> None:
        slot = self.current[label]
        slot[0] += cpu
        slot[1] += wall

    def close(self) -> None:
        self.commits.append(dict(self.current))
        self.current = defaultdict(lambda: [0.0, 0.0])


def _label(sql: str) -> str:
    found = _WORDS.match(sql)
    if not found:
        return sql[:20]
    verb, obj = found[1].upper(), found[2] or ""
    if verb == "SELECT" and sql.strip().upper() == "SELECT 1":
        return "probe SELECT 1"
    if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
        return verb
    return f"{verb} {obj}".strip()


class _TimedAppender:
    def __init__(self, appender: Any, table: str, costs: Costs) -> None:
        self._appender, self._table, self._costs = appender, table, costs

    def flush(self) -> None:
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            self._appender.flush()
        finally:
            self._costs.add(f"append {self._table}", time.thread_time() - c0, time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._appender, name)


class TimedCursor:
    """A DuckDB cursor whose statements (and appender flushes) are timed."""

    def __init__(self, con: Any, costs: Costs) -> None:
        self._con, self._costs = con, costs

    def execute(self, sql: str, *args: Any) -> Any:
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            return self._con.execute(sql, *args)
        finally:
            self._costs.add(_label(sql), time.thread_time() - c0, time.perf_counter() - t0)

    def appender(self, table: str, **options: Any) -> _TimedAppender:
        c0, t0 = time.thread_time(), time.perf_counter()
        try:
            return _TimedAppender(self._con.appender(table, **options), table, self._costs)
        finally:
            self._costs.add(f"appender() {table}", time.thread_time() - c0, time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def message_job(n: int, raw: bytes, *, agents: int, charged: bool) -> _Job:
    """The reception's commit for message ``n`` (as ``Reception.receive`` builds it)."""
    agent = f"agent{n % agents}@example.test"
    now = time.time()
    decision_id = f"d{n:08d}{os.urandom(8).hex()}"
    email_id = "e" + decision_id[1:]
    record = DecisionRecord(
        decision_id=decision_id, ts=utc(now), agent=agent, client_ip="127.0.0.1", helo="mail.bench.example",
        mail_from=f"s{n % 50}@bench.example", rcpt_to=[agent], header_from=f"s{n % 50}@bench.example",
        message_id=f"<bulk-{n}@bench.example>", subject=f"bench bulk {n}", thread_id=f"t{n:020d}", spf="pass",
        dkim="pass", dmarc="pass", rule=0, action="accept", reason=None, capabilities=["read"],
        estimated_tokens=len(raw) // 4, size=len(raw), body_sha256=None, latency_ms=3.25, intake="smtp")
    stored = StoredMessage(email_id=email_id, agent=agent, mailbox=INBOX, thread_id=record.thread_id,
                           message_id=record.message_id, subject=f"bench bulk {n}", sender=f"s{n % 50}@bench.example",
                           received_at=utc(now), decision_id=decision_id, keywords=[], size=len(raw), raw=raw)
    data = MessageData(agent=agent, decision_id=decision_id, email_id=email_id, thread_id=record.thread_id,
                       message_id=record.message_id, sender=stored.sender, to=[agent], cc=[],
                       subject=stored.subject, received_at=stored.received_at,
                       text=raw[-min(len(raw), 100_000):].decode("ascii", "replace"),
                       body_path=f"/api/v1/messages/{email_id}/body", raw_path=f"/api/v1/messages/{email_id}/raw",
                       auth=Auth(spf="pass", dkim="pass", dmarc="pass"), capabilities=["read"])
    charge = LimitCharge(rate_keys=[f"rate:{agent}:0"], token_keys=[f"tokens:{agent}:0:t"],
                         tokens=record.estimated_tokens) if charged else None

    def commit(batch: Batch) -> str:
        append_decision(batch, record)
        if charge is not None:
            PersistentLimits.write_charge(batch, charge, now)
        save_message(batch, stored)
        return enqueue(batch, agent=agent, event_type="message.received", data=data, email_id=email_id,
                       decision_id=decision_id, now=now)

    return _Job(commit, batched=True)


def run(k: int, *, size: int, commits: int, warmup: int, seconds: float, agents: int, charged: bool,
        settings: list[str]) -> dict[str, Any]:
    raw = (b"From: s1@bench.example\r\nTo: agent@example.test\r\nSubject: bench\r\n\r\n"
           + b"Some ordinary text to make a realistic body.\r\n" * (size // 46 + 1))[:size]
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp, "appliance.duckdb"))
        try:
            for setting in settings:
                db._con.execute(f"SET {setting}")
            costs = Costs()
            cursor = TimedCursor(db._con.cursor(), costs)
            n = 0
            process, wall, thread = [], [], []
            deadline = time.perf_counter() + seconds
            for i in range(warmup + commits):
                jobs = [message_job(n + j, raw, agents=agents, charged=charged) for j in range(k)]
                n += k
                p0, t0, c0 = time.process_time(), time.perf_counter(), time.thread_time()
                db._commit(cursor, jobs)  # type: ignore[arg-type]
                p1, t1, c1 = time.process_time(), time.perf_counter(), time.thread_time()
                for job in jobs:
                    job.future.result(timeout=0)  # raises if the commit failed
                costs.close()
                if i >= warmup:
                    process.append(p1 - p0)
                    wall.append(t1 - t0)
                    thread.append(c1 - c0)
                if time.perf_counter() > deadline:
                    break
            measured = costs.commits[warmup:]
        finally:
            db.close()
    labels: dict[str, tuple[float, float]] = {}
    for label in sorted({lab for c in measured for lab in c}):
        cpu = [c.get(label, [0.0, 0.0])[0] for c in measured]
        wl = [c.get(label, [0.0, 0.0])[1] for c in measured]
        labels[label] = (statistics.fmean(cpu), statistics.fmean(wl))
    statements = sum(v[0] for v in labels.values())
    return {"k": k, "commits": len(process), "process_cpu": statistics.median(process),
            "process_cpu_mean": statistics.fmean(process), "thread_cpu": statistics.median(thread),
            "wall": statistics.median(wall), "wall_mean": statistics.fmean(wall),
            "python": statistics.fmean(thread) - statements, "labels": labels}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="1,8,32", help="messages per commit (comma-separated)")
    parser.add_argument("--size", type=int, default=2700, help="bytes per stored message")
    parser.add_argument("--commits", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per K")
    parser.add_argument("--agents", type=int, default=1, help="agents (chains) the messages are spread over")
    parser.add_argument("--charged", action="store_true", help="each message also writes rate and token charges")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a DuckDB setting for the run (e.g. threads=1, checkpoint_threshold='64MB')")
    args = parser.parse_args()
    for k in (int(v) for v in args.k.split(",")):
        r = run(k, size=args.size, commits=args.commits, warmup=args.warmup, seconds=args.seconds,
                agents=args.agents, charged=args.charged, settings=args.set)
        settings = "".join(", " + v for v in args.set)
        print(f"K={k} ({r['commits']} commits, {args.size} B messages{settings}): per commit process CPU "
              f"{r['process_cpu'] * 1e3:.2f} ms median ({r['process_cpu_mean'] * 1e3:.2f} mean), writer thread "
              f"CPU {r['thread_cpu'] * 1e3:.2f} ms, wall {r['wall'] * 1e3:.2f} ms median "
              f"({r['wall_mean'] * 1e3:.2f} mean); per message process CPU {r['process_cpu'] / k * 1e3:.2f} ms")
        for label, (cpu, wall) in sorted(r["labels"].items(), key=lambda kv: -kv[1][0]):
            print(f"    {label:28s} CPU {cpu * 1e3:6.3f} ms   wall {wall * 1e3:6.3f} ms")
        print(f"    {'(python: rows, hashes)':28s} CPU {r['python'] * 1e3:6.3f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
