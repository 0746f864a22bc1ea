"""`/healthz` latency while hostile messages are read (issue: no single message freezes the appliance).

Starts the sandbox appliance as a subprocess, sends each hostile shape over
SMTP while a second thread asks ``/healthz`` every 10 ms, and prints per shape:
the SMTP reply, how long the transaction took, and the health check latency
p50 / p99 / max meanwhile. Bounded: one message per shape, 120 s per shape.

    .venv/bin/python bench/hostile.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.test_hostile_messages import (
    appliance_with,
    base64_bomb,
    folded_subject,
    long_header_line,
    many_headers,
    many_parts,
    nested,
    send,
)


def measure(port: int, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as http:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            http.get(f"http://127.0.0.1:{port}/healthz").raise_for_status()
            out.append(time.monotonic() - started)
            time.sleep(0.01)


def main() -> None:
    shapes = {
        "folded Subject, 1.8 MB": folded_subject(1_800_000),
        "100,000 headers": many_headers(100_000),
        "one 5 MB header line": long_header_line(5_000_000),
        "50,000 parts": many_parts(50_000),
        "1,000 nested levels": nested(1_000),
        "base64, 20 MB decoded": base64_bomb(20_000_000),
    }
    limits = {"default limits": "", "header limits off (deadline 10 s)":
              "max_header_bytes = 30000000\nmax_header_fields = 10000000\n"}
    print(f"{'shape':<26} {'limits':<34} {'reply':<42} {'took':>7} {'p50':>6} {'p99':>6} {'max':>6}")
    for label, reading in limits.items():
        with tempfile.TemporaryDirectory() as tmp, appliance_with(Path(tmp), reading) as appliance:
            for name, raw in shapes.items():
                stop, latencies = threading.Event(), []
                watcher = threading.Thread(target=measure, args=(appliance.http_port, stop, latencies))
                watcher.start()
                started = time.monotonic()
                code, text = send(appliance.smtp_port, raw)
                took = time.monotonic() - started
                stop.set()
                watcher.join()
                ms = sorted(x * 1000 for x in latencies) or [0.0]
                p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
                print(f"{name:<26} {label:<34} {f'{code} {text}'[:42]:<42} {took:6.2f}s "
                      f"{statistics.median(ms):5.1f} {p99:6.1f} {ms[-1]:6.1f}")
            appliance.terminate()


if __name__ == "__main__":
    main()
