"""The follower against the stand-in (a real process serving Stalwart's mail JMAP and its push) and a
real DuckDB: a decision's awaiting job is released once Stalwart shows the message, exactly once,
across restarts, by push, and through the ``cannotCalculateChanges`` fallback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from appliance.stalwart.account import AccountClient
from appliance.stalwart.follower import AccountFollower, decisions_in
from appliance.stalwart.management import ManagementClient, basic_authorization
from appliance.stalwart.provision import Provisioner
from appliance.stalwart.setup import DesiredAccount, DesiredHook, DesiredSetup
from appliance.store.database import Batch, Database, utc
from appliance.store.deliveries import add_delivery
from appliance.store.stalwart import StalwartKey, stalwart_keys
from tests.images import free_port
from tests.stalwart.standin_process import StandinProcess

AGENT = "agent@example.test"
DESIRED = DesiredSetup(hostname="mx.example.test", default_domain="example.test", request_tls=False,
                       domains=["example.test"],
                       accounts=[DesiredAccount(agent=AGENT, domain="example.test", password=None)],
                       hook=DesiredHook(url="http://127.0.0.1:9/hooks/mta", secret="s"))


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    process = StandinProcess(tmp_path / "data", tmp_path / "etc", free_port(), free_port())
    with process:
        yield process


class World:
    """A provisioned stand-in, the appliance's database, and the agent's account."""

    def __init__(self, standin: StandinProcess, db: Database, http: httpx.AsyncClient, key: StalwartKey) -> None:
        self.standin, self.db, self.http, self.key = standin, db, http, key
        self.account = AccountClient(http, standin.base_url, key.secret)
        self.released = 0

    def follower(self) -> AccountFollower:
        def count() -> None:
            self.released += 1
        return AccountFollower(agent=AGENT, client=AccountClient(self.http, self.standin.base_url, self.key.secret),
                               db=self.db, on_released=count, ping=1)

    async def awaiting(self, decision_id: str) -> None:
        def write(batch: Batch) -> None:
            add_delivery(batch, delivery_id=f"msg_{decision_id}", agent=AGENT, event_type="message.received",
                         email_id="e" + decision_id[1:], decision_id=decision_id, created_at=utc(),
                         status="awaiting", next_attempt_at=time.time(), payload="{}")
        await self.db.write_batch(write)

    async def stored(self, decision_id: str | None, subject: str = "hi") -> None:
        """A message in the agent's Inbox at Stalwart, as our hook had it written there."""
        trace = f"X-Appliance-Decision: {decision_id}; action=accept\r\n" if decision_id else ""
        raw = (f"{trace}From: alice@example.net\r\nTo: {AGENT}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{time.monotonic_ns()}@example.net>\r\n\r\nHello\r\n").encode()
        boxes = (await self.account.call("Mailbox/get", {"ids": None}))["list"]
        inbox = next(b["id"] for b in boxes if b.get("role") == "inbox")
        blob = await self.account.upload(raw)
        result = await self.account.call("Email/import", {"emails": {"m": {"blobId": blob,
                                                                           "mailboxIds": {inbox: True}}}})
        assert "m" in result["created"], result

    async def status(self, decision_id: str) -> str:
        row = await self.db.read(lambda con: con.execute(
            "SELECT status FROM deliveries WHERE decision_id = ?", [decision_id]).fetchone())
        assert row is not None
        return str(row[0])


@pytest.fixture
async def world(standin: StandinProcess, tmp_path: Path) -> AsyncIterator[World]:
    db = Database(tmp_path / "appliance.duckdb")
    async with httpx.AsyncClient(timeout=10) as http:
        async def restart(reason: str) -> None:
            standin.stop()
            standin.start()
            standin.wait_ready(30)
        management = ManagementClient(http, standin.base_url, basic_authorization("admin", "secret"))
        await Provisioner(management, http, standin.base_url, db, DESIRED, restart=restart).run()
        key = (await db.read(stalwart_keys))[0]
        try:
            yield World(standin, db, http, key)
        finally:
            db.close()


def test_the_decision_is_read_from_the_topmost_header() -> None:
    emails = [{"id": "1", "receivedAt": "2026-12-03T10:00:00Z",
               "header:X-Appliance-Decision:asText:all": ["d1; action=accept", "d0; action=accept"]},
              {"id": "2", "receivedAt": "2026-12-03T11:00:00Z", "header:X-Appliance-Decision:asText:all": []}]
    found, latest = decisions_in(emails)
    assert found == ["d1"] and latest is not None and latest.hour == 11


async def test_a_stored_message_releases_its_awaiting_job_once(world: World) -> None:
    follower = world.follower()
    await follower.catch_up()  # the starting state
    await world.awaiting("d1")
    await world.stored("d1")
    await world.stored(None)  # the agent's own mail (no decision of ours) releases nothing
    first = await follower.catch_up()
    assert (first.released, first.seen, first.fallback) == (1, 2, False)
    assert await world.status("d1") == "pending"
    again = await follower.catch_up()
    assert again.released == 0 and world.released == 1


async def test_a_restarted_follower_resumes_from_the_saved_state(world: World) -> None:
    await world.follower().catch_up()
    await world.awaiting("d1")
    await world.stored("d1")
    assert (await world.follower().catch_up()).released == 1
    await world.awaiting("d2")
    await world.stored("d2")
    fresh = await world.follower().catch_up()  # a new follower: only the saved cursor tells where it was
    assert (fresh.released, fresh.seen, fresh.fallback) == (1, 1, False)


async def test_a_first_run_finds_what_was_stored_before_it_by_query(world: World) -> None:
    await world.awaiting("d1")
    await world.stored("d1")
    first = await world.follower().catch_up()  # no cursor yet: query since the oldest awaiting job
    assert first.fallback and first.released == 1


async def test_cannot_calculate_changes_falls_back_to_a_bounded_query(world: World) -> None:
    follower = world.follower()
    await follower.catch_up()
    await world.awaiting("d1")
    await world.stored("d1")
    await world.http.post(world.standin.base_url + "/_standin/forget-changes")
    fell = await follower.catch_up()
    assert fell.fallback and fell.released == 1
    await world.awaiting("d2")
    await world.stored("d2")
    after = await follower.catch_up()  # from the fallback's state, changes work again
    assert not after.fallback and after.released == 1


async def test_a_push_releases_the_job_without_being_asked(world: World) -> None:
    follower = world.follower()
    task = asyncio.create_task(follower.run())
    try:
        await asyncio.sleep(0.5)  # connected
        await world.awaiting("d1")
        await world.stored("d1")
        deadline = time.monotonic() + 10
        while await world.status("d1") != "pending":
            assert time.monotonic() < deadline, "not released by push"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
