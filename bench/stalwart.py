"""Stalwart mode's figures, with the stand-in supervised as a local binary (tests/stalwart/stack.py):

- ``appliance run`` to Stalwart ready and configured (a new Stalwart: bootstrap, restart, setup), and
  to the appliance healthy;
- the same after a restart of the appliance (Stalwart's state kept: nothing to configure);
- dispatch latency: from the hook's decision, and from the sender's SMTP 250, to the webhook's arrival.

    .venv/bin/python bench/stalwart.py [--messages 50] [--docker]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import json
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator

from tests.delivery.receiver import WebhookReceiver
from tests.dnsserver import DnsTestServer
from tests.images import standin_image
from tests.stalwart.stack import SENDER_ZONE, Stack, send

READY = re.compile(r"stalwart ready and configured in ([0-9.]+) s \((\d+) change")


def _started(stack: Stack) -> tuple[float, float, int]:
    """Seconds to healthy, the log's seconds to Stalwart ready and configured, and the changes made."""
    before = stack.appliance.log.read_text() if stack.appliance.log.exists() else ""
    began = time.monotonic()
    stack.appliance.start(timeout=120)
    healthy = time.monotonic() - began
    found = READY.findall(stack.appliance.log.read_text()[len(before):])
    configured, changes = (float(found[-1][0]), int(found[-1][1])) if found else (float("nan"), -1)
    return healthy, configured, changes


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


@contextlib.contextmanager
def _cleanup(name: str | None) -> Iterator[None]:
    """Remove the bench's container and volumes afterwards."""
    try:
        yield
    finally:
        if name is not None:
            import docker

            client = docker.from_env()
            for container in client.containers.list(all=True, filters={"name": name}):
                container.remove(force=True)
            for volume in (f"{name}-etc", f"{name}-data"):
                with contextlib.suppress(docker.errors.NotFound):
                    client.volumes.get(volume).remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--docker", action="store_true", help="the stand-in as a container (Docker Engine)")
    args = parser.parse_args()
    name = f"appliance-bench-{uuid.uuid4().hex[:8]}"
    how = "a container on the Docker Engine" if args.docker else "a supervised binary"
    with tempfile.TemporaryDirectory() as tmp, DnsTestServer(SENDER_ZONE) as dns, WebhookReceiver() as receiver, \
            _cleanup(name if args.docker else None):
        stack = Stack(Path(tmp), dns, receiver.url, image=standin_image() if args.docker else None, name=name)
        first = _started(stack)
        from_250, from_decision = [], []
        offset = time.time() - time.monotonic()  # the receiver stamps arrivals with time.monotonic()
        try:
            for n in range(args.messages):  # one at a time: latency, not throughput
                subject = f"bench {n}"
                send(stack.stalwart_smtp, subject)
                acked = time.monotonic()
                got = receiver.wait_for(n + 1, timeout=30)[n]
                from_250.append(got.at - acked)
                data = json.loads(got.body)["data"]
                rows = stack.sql(f"SELECT epoch_ms(ts) FROM decisions WHERE decision_id = '{data['decisionId']}'")
                if rows:
                    from_decision.append(got.at + offset - rows[0][0] / 1000)
        finally:
            stack.appliance.terminate()
        again = _started(stack)
        stack.appliance.terminate()
    print(f"stalwart mode (stand-in as {how}): appliance run to Stalwart ready and configured "
          f"{first[1]:.2f} s ({first[2]} changes: bootstrap, restart, setup), to /healthz 200 {first[0]:.2f} s")
    print(f"stalwart mode, restart: Stalwart ready and configured again {again[1]:.2f} s ({again[2]} changes), "
          f"to /healthz 200 {again[0]:.2f} s")
    print(f"stalwart mode dispatch, {args.messages} messages one at a time: hook decision to webhook "
          f"{_ms(from_decision)}; sender's SMTP 250 to webhook {_ms(from_250)}")


if __name__ == "__main__":
    main()
