"""`make bench`: the sandbox appliance under load, on this machine.

Starts a loopback DNS server holding a DKIM key, SPF and DMARC records, runs
`appliance run` as a subprocess, drives DKIM-signed messages over SMTP, and
prints:
- accepted messages/s end to end at concurrency C (every message is verified,
  decided, stored and audited before its 250);
- SMTP transaction latency p50/p99 at a paced 100 messages/s;
- gate-only decisions/s in-process (parse, extract, authenticate with a warm
  DNS cache, evaluate);
- SMTP 250 to webhook received latency p50/p99 at 100 messages/s.
With ``--readers 1,2,4``: only the intake throughput, once per number of
reader processes (``[reading] processes``) against the one store.
The SMTP client is bench/loadgen.py, shared with ``make bench-peer``.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its dkim.py would shadow dkimpy: last, then.
sys.path.sort(key=lambda entry: Path(entry or ".").resolve() == Path(__file__).resolve().parent)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from appliance.gate import Envelope, InMemoryLimits, assess
from appliance.mailauth import DnsResolver
from appliance.policy import policy_from_builtins
from bench.loadgen import dot_stuffed, percentile, send
from tests.dnsserver import serve_zone
from tests.e2e.harness import ApplianceProcess, free_port, write_config

DOMAIN = "bench.example"
AGENT = "agent@example.test"
POLICY = f"""
defaultAction = "bounce"
[[senders]]
match = {{ domain = "{DOMAIN}", requireDkim = true, requireSpf = true, requireDmarc = true }}
capabilities = ["read"]
[[contentGuards]]
reject = "/ignore (previous|all) instructions/i"
reason = "prompt_injection_suspected"
"""
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-32byte").decode()


def keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public).decode()


def signed_messages(count: int, private: bytes, tag: str) -> list[bytes]:
    out = []
    for n in range(count):
        raw = (f"From: Sender {n % 50} <s{n % 50}@{DOMAIN}>\r\nTo: {AGENT}\r\nSubject: bench {tag} {n}\r\n"
               f"Message-ID: <{tag}-{n}@{DOMAIN}>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n"
               f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
               f"Hello,\r\n\r\nMessage {n} of the benchmark. Can we meet on Thursday at 10:00?\r\n"
               f"{'Some ordinary text to make a realistic body. ' * 20}\r\n").encode()
        sig = dkim.sign(raw, b"s1", DOMAIN.encode(), private, include_headers=[b"from", b"to", b"subject",
                                                                                b"message-id", b"date"])
        out.append(sig + raw)
    return out


def pct(values: list[float], q: float) -> float:
    return percentile(values, q)


async def send_all(port: int, messages: list[bytes], concurrency: int, rate: float | None,
                   deadline: float) -> tuple[list[float], dict[str, float], int]:
    """Send over `concurrency` persistent connections (bench/loadgen.py); pace to `rate`/s when given."""
    ids = [raw.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode() for raw in messages]
    run = await send(port, [dot_stuffed(raw) for raw in messages], sessions=concurrency, count=len(messages),
                     seconds=max(0.0, deadline - time.perf_counter()), mail_from=lambda n: f"s{n % 50}@{DOMAIN}",
                     rcpt=[AGENT], rate=rate)
    acked_at = {ids[n]: at for n, at in run.accepted_at.items()}
    return run.latencies, acked_at, sum(run.refused.values()) + run.errors


class WebhookSink(ThreadingHTTPServer):
    """Records when each message.received webhook arrived, by Message-ID."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                now = time.time()
                try:
                    message_id = json.loads(body)["data"]["messageId"].strip("<>")
                    outer.received.setdefault(message_id, now)
                except (ValueError, KeyError, TypeError, AttributeError):
                    pass
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


async def gate_only(nameserver: str, messages: list[bytes], seconds: float) -> float:
    policy = policy_from_builtins(__import__("tomllib").loads(POLICY))
    resolver = DnsResolver([nameserver])
    envelope = Envelope(client_ip="127.0.0.1", helo="mail.bench.example", mail_from=f"s0@{DOMAIN}",
                        rcpt_to=[AGENT])
    limits = InMemoryLimits()
    await assess(policy, envelope, messages[0], agent=AGENT, resolver=resolver, limits=limits, now=time.time())
    done, start = 0, time.perf_counter()
    for raw in messages:
        decision = await assess(policy, envelope, raw, agent=AGENT, resolver=resolver, limits=limits,
                                now=time.time())
        assert decision.action == "accept", decision.trace
        done += 1
        if time.perf_counter() - start > seconds:
            break
    return done / (time.perf_counter() - start)


def by_readers(zone: list[tuple[str, str, str]], bulk: list[bytes], counts: list[int], concurrency: int,
               rounds: int) -> int:
    """Intake throughput with each count of reader processes against the one store (a fresh one each time)."""
    rates: dict[int, list[float]] = {n: [] for n in counts}
    with serve_zone(zone) as dns_server, tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for n in counts:
                directory = Path(tmp, f"r{round_}-readers-{n}")
                directory.mkdir()
                config = write_config(directory, policy=POLICY, agent=AGENT, nameservers=[dns_server.address])
                config.write_text(config.read_text() + f"\n[reading]\nprocesses = {n}\n")
                with ApplianceProcess(config) as proc:
                    asyncio.run(send_all(proc.smtp_port, bulk[:50], 4, None, time.perf_counter() + 60))  # warm-up
                    t0 = time.perf_counter()
                    lat, _, failed = asyncio.run(send_all(proc.smtp_port, bulk, concurrency, None,
                                                          time.perf_counter() + 300))
                    wall = time.perf_counter() - t0
                    proc.terminate()
                rates[n].append(len(lat) / wall)
                print(f"round {round_ + 1}, {n} reader process(es): {len(lat)} accepted in {wall:.2f} s = "
                      f"{len(lat) / wall:.0f} messages/s at concurrency {concurrency} ({failed} refused); "
                      f"transaction p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms", flush=True)
    for n in counts:
        print(f"{n} reader process(es): median {statistics.median(rates[n]):.0f} messages/s "
              f"(runs: {', '.join(f'{r:.0f}' for r in rates[n])})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="messages for the throughput run")
    parser.add_argument("-c", type=int, default=16, help="concurrent SMTP connections")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--readers", default="", metavar="N,N,...",
                        help="only the intake throughput, once per count of reader processes ([reading] processes)")
    parser.add_argument("--rounds", type=int, default=1, help="with --readers: rounds over the counts, interleaved")
    args = parser.parse_args()
    private, public = keypair()
    zone = [(f"s1._domainkey.{DOMAIN}", "TXT", f"v=DKIM1; k=rsa; p={public}"),
            (DOMAIN, "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
            (f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r")]
    print(f"preparing {args.n} DKIM-signed messages (rsa-sha256, 2048 bits)...", flush=True)
    bulk = signed_messages(args.n, private, "bulk")
    if args.readers:
        return by_readers(zone, bulk, [int(v) for v in args.readers.split(",")], args.c, args.rounds)
    # The second run sends the same bulk messages again; Message-IDs only need to be unique per run.
    paced_count = 2 * int(100 * args.paced_seconds)
    paced = signed_messages(paced_count, private, "paced")
    with serve_zone(zone) as dns_server, tempfile.TemporaryDirectory() as tmp, WebhookSink() as sink:
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        # Run 1, the intake alone (no webhook configured): what the gate, store and audit sustain.
        Path(tmp, "intake").mkdir()
        Path(tmp, "delivery").mkdir()
        config = write_config(Path(tmp, "intake"), policy=POLICY, agent=AGENT, nameservers=[dns_server.address])
        with ApplianceProcess(config) as proc:
            lat, _, failed = asyncio.run(send_all(proc.smtp_port, paced[: paced_count // 2], 8, 100.0,
                                                  time.perf_counter() + args.paced_seconds + 60))
            print(f"intake, paced 100 messages/s: {len(lat)} accepted ({failed} refused); SMTP transaction "
                  f"p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms", flush=True)
            t0 = time.perf_counter()
            lat, _, failed = asyncio.run(send_all(proc.smtp_port, bulk, args.c, None, time.perf_counter() + 300))
            wall = time.perf_counter() - t0
            print(f"intake, throughput: {len(lat)} accepted in {wall:.2f} s = {len(lat) / wall:.0f} messages/s at "
                  f"concurrency {args.c} ({failed} refused); transaction p50 {pct(lat, .5) * 1000:.1f} ms, "
                  f"p99 {pct(lat, .99) * 1000:.1f} ms", flush=True)
            proc.terminate()
        # Run 2, with a webhook: every accepted message is also delivered, signed, to the sink.
        hook = f"http://127.0.0.1:{sink.server_address[1]}/hook"
        config = write_config(Path(tmp, "delivery"), policy=POLICY, agent=AGENT, nameservers=[dns_server.address],
                              webhook_url=hook)
        with ApplianceProcess(config, env={"AGENT_WEBHOOK_SECRET": WEBHOOK_SECRET}) as proc:
            lat, acked, failed = asyncio.run(send_all(proc.smtp_port, paced[paced_count // 2:], 8, 100.0,
                                                      time.perf_counter() + args.paced_seconds + 60))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(m in sink.received for m in acked):
                time.sleep(0.1)
            gaps = [sink.received[m] - acked[m] for m in acked if m in sink.received]
            print(f"with webhooks, paced 100 messages/s: SMTP transaction p50 {pct(lat, .5) * 1000:.1f} ms, "
                  f"p99 {pct(lat, .99) * 1000:.1f} ms; SMTP 250 -> webhook received: {len(gaps)}/{len(acked)} "
                  f"delivered, p50 {pct(gaps, .5) * 1000:.1f} ms, p99 {pct(gaps, .99) * 1000:.1f} ms", flush=True)
            before = len(sink.received)
            t0 = time.perf_counter()
            lat, acked, failed = asyncio.run(send_all(proc.smtp_port, bulk, args.c, None, time.perf_counter() + 300))
            wall = time.perf_counter() - t0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and len(sink.received) - before < len(acked):
                time.sleep(0.1)
            drained = time.perf_counter() - t0
            print(f"with webhooks, throughput: {len(lat)} accepted in {wall:.2f} s = {len(lat) / wall:.0f} messages/s; "
                  f"all {len(sink.received) - before} webhooks received after {drained:.2f} s = "
                  f"{(len(sink.received) - before) / drained:.0f} deliveries/s", flush=True)
            proc.terminate()
        rate = asyncio.run(gate_only(dns_server.address, bulk, 20.0))
        print(f"gate only (parse, extract, DKIM/SPF/DMARC with a warm DNS cache, evaluate): {rate:.0f} decisions/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
