"""Send-half fixtures: a real database file, messages to queue, a CA for TLS peers, helpers to read the queue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from appliance.outbound.model import Delivery, OutboundMessage
from appliance.outbound.queue import enqueue
from appliance.store.database import Database
from tests.conftest import AGENT

HOST = "mx.example.test"


def outbound(n: int = 1, recipients: list[str] | None = None, agent: str = AGENT) -> OutboundMessage:
    """A composed message as the Outbox would queue it (unsigned: the transports do not look inside)."""
    message_id = f"<m{n}@{HOST}>"
    to = recipients or ["bob@example.org"]
    raw = (f"From: Agent <{agent}>\r\nTo: {', '.join(to)}\r\nSubject: hello {n}\r\n"
           f"Message-ID: {message_id}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n").encode()
    return OutboundMessage(email_id=f"s{n:04d}", agent=agent, thread_id=f"T{n}", message_id=message_id,
                           mail_from=agent, recipients=to, subject=f"hello {n}", in_reply_to=None, raw=raw,
                           body_sha256=hashlib.sha256(raw).hexdigest())


def delivery(n: int = 1, recipients: list[str] | None = None) -> Delivery:
    message = outbound(n, recipients)
    return Delivery(job_id=f"j{n}", email_id=message.email_id, agent=message.agent, mail_from=message.mail_from,
                    recipients=message.recipients, raw=message.raw, attempts=0)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "var" / "appliance.duckdb")
    yield database
    database.close()


async def queue(db: Database, message: OutboundMessage, now: float) -> list[str]:
    """Queue ``message`` in a transaction of its own; the job ids."""
    return await db.write_batch(lambda batch: enqueue(batch, message, now=now))


async def jobs_of(db: Database, email_id: str) -> list[dict[str, Any]]:
    def read(con: Any) -> list[dict[str, Any]]:
        cursor = con.execute("SELECT * FROM outbound_jobs WHERE email_id = ? ORDER BY attempts, job_id", [email_id])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return await db.read(read)


async def events_of(db: Database, event_type: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of the agent's delivery jobs, in commit order."""
    rows = await db.read(lambda con: con.execute(
        "SELECT event_type, payload FROM deliveries WHERE event_type IN ('message.sent', 'message.bounced') "
        "ORDER BY seq").fetchall())
    return [(t, json.loads(p)) for t, p in rows if event_type is None or t == event_type]


async def audit_of(db: Database) -> list[tuple[str, str, str]]:
    rows = await db.read(lambda con: con.execute(
        "SELECT type, agent, detail FROM events WHERE type LIKE 'outbound.%' ORDER BY ts").fetchall())
    return [(str(t), str(a), str(d)) for t, a, d in rows]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA (and nothing else)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
