"""The outbound worker as a process of its own, for the SIGKILL test.

    python -m tests.outbound.crash_worker DATABASE PEER_PORT

Relays every queued job to the peer on 127.0.0.1 (no TLS), quick retries;
exits 0 once no job is queued. Killed at random moments by the test.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from appliance.config import OutboundConfig
from appliance.outbound.retry import Backoff
from appliance.outbound.transports import SmarthostTransport
from appliance.outbound.worker import OutboundWorker
from appliance.store.database import Database


async def main(path: Path, port: int) -> int:
    db = Database(path)
    config = OutboundConfig(transport="smarthost", smarthost=f"127.0.0.1:{port}", require_tls=False,
                            connect_timeout=2.0)
    transport = SmarthostTransport(config, hostname="mx.example.test", environ={}, command_timeout=5.0)
    worker = OutboundWorker(db, transport, retry_for=3600.0, backoff=Backoff(first=0.05, cap=0.2),
                            concurrency=4, idle_poll=0.05)
    await worker.start()
    print("worker started", flush=True)
    for _ in range(1200):  # bounded: a minute at most
        left = await db.read(lambda con: con.execute(
            "SELECT count(*) FROM outbound_jobs WHERE status = 'queued'").fetchone())
        if left is not None and left[0] == 0:
            break
        await asyncio.sleep(0.05)
    await worker.stop()
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]))))
