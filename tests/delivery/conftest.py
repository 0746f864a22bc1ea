"""Dispatcher fixtures: a database, a configuration whose agent has a webhook, sample events."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import ApplianceConfig
from appliance.delivery.dispatcher import Dispatcher
from appliance.delivery.jobs import enqueue
from appliance.delivery.payload import MessageData
from appliance.delivery.schedule import RetrySchedule
from appliance.delivery.tokens import TokenIssuer
from appliance.sdk import Auth
from appliance.store.database import Database
from tests.conftest import AGENT

SECRET = "whsec_" + base64.b64encode(b"first-secret-key-0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"second-secret-key-0123456789abcd").decode()
SECRET_ENV = "TEST_WEBHOOK_SECRET"
FAST = RetrySchedule(delays=(0, 0.02, 0.02, 0.02, 0.02), jitter=0.0)
"""The standard schedule's shape, milliseconds instead of hours."""


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "var" / "appliance.duckdb")
    yield database
    database.close()


@pytest.fixture
def tokens() -> TokenIssuer:
    return TokenIssuer(b"k" * 32, issuer="mx.example.test", ttl=3600)


@pytest.fixture
def webhook_config(make_config: Callable[..., ApplianceConfig]) -> Callable[..., ApplianceConfig]:
    """``webhook_config(url, **delivery)``: AGENT's webhook is ``url`` (secret in $TEST_WEBHOOK_SECRET)."""

    def make(url: str | None, **delivery: Any) -> ApplianceConfig:
        config = make_config(delivery={"timeout": 2.0, **delivery})
        first = msgspec.structs.replace(config.agents[0], webhook_url=url, webhook_secret_env=SECRET_ENV)
        return msgspec.structs.replace(config, agents=[first, *config.agents[1:]])

    return make


StartDispatcher = Callable[..., Awaitable[Dispatcher]]


@pytest.fixture
async def start_dispatcher(db: Database, tokens: TokenIssuer) -> AsyncIterator[StartDispatcher]:
    """``await start_dispatcher(config, secrets=SECRET, schedule=FAST, **options)``; stopped afterwards."""
    started: list[Dispatcher] = []

    async def start(config: ApplianceConfig, *, secrets: str = SECRET, schedule: RetrySchedule = FAST,
                    **options: Any) -> Dispatcher:
        dispatcher = Dispatcher(db, config, tokens=tokens, schedule=schedule,
                                environ={SECRET_ENV: secrets}, **options)
        await dispatcher.start()
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        await dispatcher.stop(grace=0.1)


def message(n: int = 1, agent: str = AGENT) -> MessageData:
    return MessageData(
        agent=agent, decision_id=f"d{n:04d}", email_id=f"e{n:04d}", thread_id="T1", message_id=f"<m{n}@example.net>",
        sender="alice@example.net", to=[agent], cc=[], subject=f"Hello {n}",
        received_at=datetime(2025, 1, 6, 10, 0, tzinfo=UTC), text=f"body {n}", html=None,
        body_path=f"/api/v1/messages/e{n:04d}/body", raw_path=f"/api/v1/messages/e{n:04d}/raw",
        attachments=[], auth=Auth(spf="pass", dkim="pass", dmarc="pass"), capabilities=["read", "reply"],
        budget=5000,
    )


async def add_job(db: Database, n: int = 1, agent: str = AGENT, dispatcher: Dispatcher | None = None,
                  status: str = "pending") -> str:
    """Queue ``message(n)`` for ``agent`` (as Reception does) and wake the dispatcher; return the delivery id."""
    data = message(n, agent)
    delivery_id = await db.write(lambda con: enqueue(con, agent=agent, event_type="message.received", data=data,
                                                     email_id=data.email_id, decision_id=data.decision_id,
                                                     now=time.time(), status=status))
    if dispatcher is not None:
        dispatcher.wake()
    return delivery_id


async def row(db: Database, delivery_id: str) -> dict[str, Any]:
    cols = ["status", "attempts", "last_status", "last_error", "next_attempt_at", "round_start"]
    found = await db.read(lambda con: con.execute(
        f"SELECT {', '.join(cols)} FROM deliveries WHERE delivery_id = ?", [delivery_id]).fetchone())
    assert found is not None
    return dict(zip(cols, found, strict=True))


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
