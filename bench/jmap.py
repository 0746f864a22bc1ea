"""JMAP list latency: Email/query + Email/get of 50 emails in a mailbox of 100,000, over HTTP.

    .venv/bin/python bench/jmap.py [--messages 100000] [--rounds 300]

Seeds a fresh data directory with N stored messages of one agent (a text and
an HTML part, a few KB each, written through ``store.save_message`` as the
intake writes them), lets the JMAP indexer take them in (timed: it reads each
message once), then serves the app with uvicorn on 127.0.0.1 and sends, one at
a time, the request a mail client sends to show a page of the inbox: one HTTP
POST with Email/query (inMailbox inbox, newest first, a random page among the
first 2,000 emails, or anywhere with --spread, limit 50, calculateTotal) and Email/get of its ids by
result reference (id, threadId, mailboxIds, keywords, from, to, subject,
receivedAt, size, preview, hasAttachment). Prints p50, p95, p99 and max
over the rounds, client-side, HTTP included. Not part of the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/dkim.py would shadow dkimpy:
# move that folder last (a stable sort).
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import random
import tempfile
import threading
import time

import httpx
import msgspec
import uvicorn

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.jmap.local import account_id
from appliance.store.database import Batch, utc
from appliance.store.messages import StoredMessage, save_message

AGENT = "agent@bench.example"
KEY = "bench-agent-key"
WORDS = ["the", "agent", "invoice", "please", "forward", "meeting", "tomorrow", "attached", "regards", "thanks",
         "report", "quarterly", "numbers", "review", "a", "of", "to", "budget", "calendar", "notice"]
PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "to", "subject", "receivedAt", "size", "preview",
              "hasAttachment"]


def raw_message(i: int, rng: random.Random) -> bytes:
    """A text and HTML alternative of a few KB, as a mail client writes one (built by hand: EmailMessage is slow)."""
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))).capitalize()
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(rng.randint(5, 30))]
    text = "\r\n".join(lines)
    html = "<html><body>" + "".join(f"<p>{line}</p>\r\n" for line in lines) + "</body></html>"
    return (f"From: Sender {i % 97} <sender{i % 97}@bench.example>\r\nTo: {AGENT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <bench-{i}@bench.example>\r\nDate: Mon, 6 Jan 2025 10:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b{i}\"\r\n\r\n"
            f"--b{i}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--b{i}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b{i}--\r\n").encode()


def seed(config: ApplianceConfig, count: int) -> None:
    """``count`` stored messages, inserted in batches as the intake's group commit does."""
    from appliance.store.database import Database

    db = Database(config.data_path / "appliance.duckdb")
    rng = random.Random(7)
    start = time.time() - count * 30
    try:
        for first in range(0, count, 2_000):
            rows = []
            for i in range(first, min(count, first + 2_000)):
                raw = raw_message(i, rng)
                rows.append(StoredMessage(
                    email_id=f"e{int((start + i * 30) * 1000):012x}{i:016x}", agent=AGENT, mailbox="inbox",
                    thread_id=f"T{i // 3:016x}", message_id=f"<bench-{i}@bench.example>", subject="bench",
                    sender=f"sender{i % 97}@bench.example", received_at=utc(start + i * 30),
                    decision_id=f"d{i:028x}", keywords=["$seen"] if i % 3 else [], size=len(raw), raw=raw))

            def write(batch: Batch, rows: list[StoredMessage] = rows) -> None:
                for row in rows:
                    save_message(batch, row)

            db.write_batch_sync(write)
    finally:
        db.close()


def make_config(directory: Path, port: int) -> ApplianceConfig:
    (directory / "policy.toml").write_text('defaultAction = "bounce"\n')
    os.environ["BENCH_AGENT_KEY"] = KEY
    os.environ["BENCH_ADMIN_TOKEN"] = "bench-admin"
    return msgspec.convert({
        "mode": "stalwart", "hostname": "mx.bench.example", "data_dir": "var", "base_dir": str(directory),
        "http": {"listen": f"127.0.0.1:{port}", "admin_token_env": "BENCH_ADMIN_TOKEN"},
        "dns": {"offline": True}, "hook": {"secret_env": "BENCH_HOOK_SECRET"},
        "agents": [{"address": AGENT, "policy": "policy.toml", "api_key_env": "BENCH_AGENT_KEY"}],
    }, ApplianceConfig)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--spread", action="store_true",
                        help="pages anywhere in the mailbox (rows not read before: Email/get reads them from DuckDB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = make_config(directory, 0)
        started = time.perf_counter()
        seed(config, args.messages)
        print(f"seeded {args.messages} messages in {time.perf_counter() - started:.1f} s")
        app = create_app(config)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/api/v1/jmap"
        headers = {"Authorization": f"Bearer {KEY}"}
        account = account_id(AGENT)
        with httpx.Client(timeout=600) as client:
            started = time.perf_counter()
            client.post(url, json={"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {}, "0"]]},
                        headers=headers).raise_for_status()  # the first request indexes the store
            print(f"indexed {args.messages} messages in {time.perf_counter() - started:.1f} s")
            rng = random.Random(1)
            pages = args.messages - 50 if args.spread else 2_000
            timings = []
            for i in range(args.rounds + 20):
                body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"], "methodCalls": [
                    ["Email/query", {"accountId": account, "filter": {"inMailbox": "inbox"},
                                     "sort": [{"property": "receivedAt", "isAscending": False}],
                                     "position": rng.randrange(0, pages), "limit": 50, "calculateTotal": True}, "q"],
                    ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query",
                                                                   "path": "/ids"}, "properties": PROPERTIES}, "g"]]}
                t0 = time.perf_counter()
                response = client.post(url, json=body, headers=headers)
                elapsed = (time.perf_counter() - t0) * 1000
                response.raise_for_status()
                answers = response.json()["methodResponses"]
                assert len(answers[1][1]["list"]) == 50 and answers[0][1]["total"] == args.messages, answers[0]
                if i >= 20:  # warm-up rounds left out
                    timings.append(elapsed)
        where = "anywhere in it" if args.spread else "among its newest 2,000"
        print(f"Email/query + Email/get of 50 in a mailbox of {args.messages} (pages {where}), {args.rounds} rounds "
              "over HTTP: "
              f"p50 {percentile(timings, 50):.1f} ms, p95 {percentile(timings, 95):.1f} ms, "
              f"p99 {percentile(timings, 99):.1f} ms, max {max(timings):.1f} ms")
        server.should_exit = True
        thread.join(15)


if __name__ == "__main__":
    main()
