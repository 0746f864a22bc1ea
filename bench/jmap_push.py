"""JMAP push latency: from the SMTP 250 of a new message to the EventSource StateChange for it, over HTTP.

    .venv/bin/python bench/jmap_push.py [--messages 100] [--rate 10]

Starts the sandbox appliance as a subprocess (``appliance run``, offline DNS,
a policy accepting the sender's domain without authentication), reads the
agent's JMAP Session at /.well-known/jmap and opens its eventSourceUrl with
types=Email, closeafter=no and ping=0, then sends N messages over one SMTP
connection (aiosmtplib), one at a time, no faster than ``--rate`` a second.
For each it measures the time from the SMTP 250 (the end of the DATA reply:
the message is decided and stored) to the arrival of the first ``state`` event
whose Email state differs from the one before; the next message waits for
that event (or ``--timeout`` seconds), so each event belongs to one message.
Prints p50, p99 and max, client-side, and how many messages got no StateChange
within the timeout. Bounded in count (``--messages``) and time (``--seconds``).
Not part of the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, and bench/dkim.py would shadow dkimpy:
# move that folder last (a stable sort).
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import tempfile
import time

import aiosmtplib
import httpx

from tests.e2e.harness import ApplianceProcess, write_config

AGENT = "agent@example.test"
KEY = "agent-test-key"  # tests/e2e/harness.py's AGENT_API_KEY
SENDER_DOMAIN = "example.net"
POLICY = f"""
defaultAction = "bounce"
[[senders]]
match = {{ domain = "{SENDER_DOMAIN}" }}
capabilities = ["read"]
"""


def percentile(values: list[float], p: float) -> float:
    """The ``p`` percentile (0..100) of ``values``, nearest rank; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def message(n: int) -> bytes:
    return (f"From: Boss <boss@{SENDER_DOMAIN}>\r\nTo: {AGENT}\r\nSubject: push bench {n}\r\n"
            f"Message-ID: <push-{n}@{SENDER_DOMAIN}>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hello,\r\n\r\nMessage {n} of the push benchmark. Can we meet on Thursday at 10:00?\r\n").encode()


class EmailStates:
    """Reads one EventSource stream; notes when each new Email state of ``account`` arrived."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.state: str | None = None
        self.changes: asyncio.Queue[float] = asyncio.Queue()
        self.opened = asyncio.Event()

    async def read(self, client: httpx.AsyncClient, url: str) -> None:
        async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
            response.raise_for_status()
            self.opened.set()
            event, data = "", ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line == "":
                    if event == "state" and data:
                        self.offer(time.perf_counter(), json.loads(data))
                    event, data = "", ""

    def offer(self, at: float, change: dict[str, object]) -> None:
        changed = change.get("changed")
        states = changed.get(self.account) if isinstance(changed, dict) else None
        state = states.get("Email") if isinstance(states, dict) else None
        if isinstance(state, str) and state != self.state:
            self.state = state
            self.changes.put_nowait(at)


async def measure(base: str, smtp_port: int, count: int, rate: float, wait: float,
                  seconds: float) -> tuple[list[float], int, int, float]:
    """Latencies (s) of the messages that got their StateChange, how many did not, how many were sent, elapsed s."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10, read=None)) as client:
        response = await client.get(f"{base}/.well-known/jmap")
        response.raise_for_status()
        session = response.json()
        account = session["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        url = (session["eventSourceUrl"].replace("{types}", "Email").replace("{closeafter}", "no")
               .replace("{ping}", "0"))
        states = EmailStates(account)
        reader = asyncio.create_task(states.read(client, url))
        try:
            await asyncio.wait_for(states.opened.wait(), 10)
            latencies: list[float] = []
            missed = sent = 0
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, timeout=30)
            await smtp.connect()
            began = time.perf_counter()
            try:
                for n in range(count):
                    if time.perf_counter() - began > seconds or reader.done():
                        break
                    await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
                    while not states.changes.empty():  # a late event of an earlier message is not this one's
                        states.changes.get_nowait()
                    await smtp.sendmail(f"boss@{SENDER_DOMAIN}", [AGENT], message(n))
                    acked = time.perf_counter()  # sendmail returns on the 250 to the end of DATA
                    sent += 1
                    try:
                        arrived = await asyncio.wait_for(states.changes.get(), wait)
                    except TimeoutError:
                        missed += 1
                        continue
                    latencies.append(arrived - acked)
                elapsed = time.perf_counter() - began
            finally:
                await smtp.quit()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return latencies, missed, sent, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second at most")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each StateChange")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop sending after this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), policy=POLICY, agent=AGENT)
        text = config.read_text()
        start, end = text.index("[dns]"), text.index("[[agents]]")
        config.write_text(text[:start] + "[dns]\noffline = true\n" + text[end:])  # no DNS: nothing to wait for
        with ApplianceProcess(config) as appliance:
            latencies, missed, sent, elapsed = asyncio.run(measure(
                f"http://127.0.0.1:{appliance.http_port}", appliance.smtp_port, args.messages, args.rate,
                args.timeout, args.seconds))
            appliance.terminate()
    ms = [value * 1000 for value in latencies]
    print(f"JMAP EventSource, SMTP 250 to StateChange (types=Email), {sent} messages one at a time "
          f"at most {args.rate:g}/s ({sent / elapsed:.1f}/s): "
          f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
          f"max {max(ms, default=float('nan')):.1f} ms, "
          f"{missed} without a StateChange within {args.timeout:g} s")


if __name__ == "__main__":
    main()
