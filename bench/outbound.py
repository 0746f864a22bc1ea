"""`make bench` (outbound): agents' replies through the API to an SMTP peer that answers 250.

Starts an aiosmtpd peer on loopback and the sandbox appliance (smarthost
transport to that peer, DKIM keys made by `appliance dkim keygen`), receives
one message for the agent to get a capability token, then sends N replies
through the SDK's AsyncClient at concurrency C and prints:
- API answers (202, committed: Sent copy, audit row, queue job) per second, p50/p99;
- end to end (API call to the peer's 250 for that message) p50/p99, and messages/s at the peer;
- the DKIM signing cost per message (RSA-2048 + ed25519), in-process.
Bounded in count and time.

    .venv/bin/python bench/outbound.py [--count 300] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.mailauth.keys import generate_key
from appliance.mailauth.signing import sign
from appliance.sdk import AsyncClient
from tests.e2e.harness import ApplianceProcess, free_port, write_config

AGENT = "agent@example.test"
POLICY = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]
"""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Peer:
    """An SMTP peer that answers 250 and notes when each Message-ID arrived."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        raw: bytes = envelope.original_content  # type: ignore[attr-defined]
        for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                self.received.setdefault(line.split(b":", 1)[1].strip().decode(), time.perf_counter())
        return "250 2.0.0 OK"


def signing_cost(rounds: int = 200) -> float:
    """Milliseconds to sign a 2.7 KB message with RSA-2048 and ed25519."""
    keys = [generate_key("b-rsa", "rsa-sha256"), generate_key("b-ed25519", "ed25519-sha256")]
    raw = (b"From: agent@example.test\r\nTo: boss@example.net\r\nSubject: Re: bench\r\n"
           b"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <b@example.test>\r\n\r\n"
           + b"Some ordinary reply text for the benchmark.\r\n" * 60)
    started = time.perf_counter()
    for _ in range(rounds):
        sign(raw, domain="example.test", keys=keys, now=time.time())
    return (time.perf_counter() - started) * 1000 / rounds


async def replies(base: str, email_id: str, token: str, count: int, concurrency: int,
                  deadline: float) -> tuple[list[float], dict[str, float]]:
    latencies: list[float] = []
    started_at: dict[str, float] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    async with AsyncClient(base, api_key="agent-test-key") as client:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                began = time.perf_counter()
                result = await client.reply(email_id, f"Reply {n}: Thursday at 10 suits me.", capability_token=token)
                latencies.append(time.perf_counter() - began)
                started_at[result.message_id] = began
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, started_at


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    peer = Peer()
    port = free_port()
    controller = Controller(peer, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = write_config(Path(tmp), policy=POLICY)
            config.write_text(config.read_text() + f"""
[outbound]
transport = "smarthost"
smarthost = "127.0.0.1:{port}"
require_tls = false
""")
            subprocess.run([sys.executable, "-m", "appliance", "dkim", "keygen", "--domain", "example.test",
                            "--config", str(config)], check=True, capture_output=True)
            with ApplianceProcess(config) as appliance:
                base = f"http://127.0.0.1:{appliance.http_port}"
                with smtplib.SMTP("127.0.0.1", appliance.smtp_port) as smtp:
                    smtp.sendmail("boss@example.net", [AGENT], (
                        b"From: boss@example.net\r\nTo: agent@example.test\r\nSubject: bench\r\n"
                        b"Message-ID: <bench-parent@example.net>\r\n\r\nCan we meet?\r\n"))
                email_id, token = asyncio.run(parent(base))
                began = time.perf_counter()
                deadline = began + 120
                latencies, started_at = asyncio.run(replies(base, email_id, token, args.count, args.concurrency,
                                                            deadline))
                api_done = time.perf_counter()
                while len(peer.received) < len(started_at) and time.perf_counter() < deadline:
                    time.sleep(0.01)
                done = time.perf_counter()
                appliance.terminate()
        end_to_end = [peer.received[m] - t for m, t in started_at.items() if m in peer.received]
        print(f"outbound, {args.count} replies at concurrency {args.concurrency} (smarthost peer answering 250):")
        print(f"  API 202 (committed): {len(latencies) / (api_done - began):.0f}/s, "
              f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms")
        print(f"  at the peer: {len(end_to_end)}/{len(started_at)} in {done - began:.1f} s "
              f"({len(end_to_end) / (done - began):.0f}/s); API call to peer 250 p50 "
              f"{percentile(end_to_end, 0.5) * 1000:.1f} ms, p99 {percentile(end_to_end, 0.99) * 1000:.1f} ms")
        print(f"  DKIM signing (RSA-2048 + ed25519), 2.7 KB: {signing_cost():.2f} ms per message")
    finally:
        controller.stop()


async def parent(base: str) -> tuple[str, str]:
    """The received message's email id and capability token, from the event stream."""
    async with AsyncClient(base, api_key="agent-test-key") as client:
        async for streamed in client.events():
            data = getattr(streamed.event, "data", None)
            if data is not None and getattr(data, "capability_token", None):
                return str(data.email_id), str(data.capability_token)
    raise RuntimeError("no message.received event")


if __name__ == "__main__":
    threading.excepthook = lambda args: None
    main()
