"""The dispatcher against a real HTTP receiver on 127.0.0.1, signatures checked independently."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from email.utils import formatdate

from standardwebhooks.webhooks import Webhook

from appliance.config import ApplianceConfig
from appliance.delivery.schedule import RetrySchedule
from appliance.delivery.tokens import TokenIssuer
from appliance.sdk import MessageReceived, verify_webhook
from appliance.store.database import Database
from tests.conftest import AGENT, OTHER_AGENT
from tests.delivery.conftest import (
    OTHER_SECRET,
    SECRET,
    StartDispatcher,
    add_job,
    eventually,
    row,
)
from tests.delivery.receiver import Answer, RawReceiver, WebhookReceiver, free_port

WebhookConfig = Callable[..., ApplianceConfig]


def headers_of(got: object) -> dict[str, str]:
    return dict(got.headers)  # type: ignore[attr-defined]


async def test_delivers_a_signed_event_that_standard_webhooks_and_the_sdk_verify(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher, tokens: TokenIssuer) -> None:
    with WebhookReceiver() as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url))
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        [got] = await receiver.arrived(1)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))

    assert got.headers["webhook-id"] == delivery_id
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 5
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload["type"] == "message.received"
    data = payload["data"]
    assert {"agent", "decisionId", "emailId", "threadId", "messageId", "from", "to", "cc", "subject", "receivedAt",
            "text", "html", "attachments", "auth", "capabilities", "budget", "capabilityToken"} <= set(data)
    assert data["from"] == "alice@example.net" and data["capabilities"] == ["read", "reply"]
    event = verify_webhook(got.headers, got.body, SECRET)
    assert isinstance(event, MessageReceived) and event.data.email_id == "e0001"
    claims = tokens.verify(event.data.capability_token)
    assert claims is not None and claims.sub == AGENT and claims.capabilities == ["read", "reply"]
    assert claims.decision_id == "d0001" and claims.thread_id == "T1"

    attempts = await db.read(lambda con: con.execute(
        "SELECT attempt, status, latency_ms, error FROM delivery_attempts WHERE delivery_id = ?",
        [delivery_id]).fetchall())
    assert len(attempts) == 1 and attempts[0][:2] == (1, 200) and attempts[0][2] > 0 and attempts[0][3] is None


async def _status_is(db: Database, delivery_id: str, status: str) -> bool:
    return bool((await row(db, delivery_id))["status"] == status)


async def test_receiver_down_then_up_gets_the_same_webhook_id(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    port = free_port()
    config = webhook_config(f"http://127.0.0.1:{port}/hook")
    slow = RetrySchedule(delays=(0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1), jitter=0.0)
    dispatcher = await start_dispatcher(config, schedule=slow)
    delivery_id = await add_job(db, 1, dispatcher=dispatcher)
    await eventually(lambda: _attempts_at_least(db, delivery_id, 1))
    assert (await row(db, delivery_id))["status"] == "pending"

    with WebhookReceiver(port=port) as receiver:
        [got] = await receiver.arrived(1)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))
    assert got.headers["webhook-id"] == delivery_id
    errors = await db.read(lambda con: con.execute(
        "SELECT status, error FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt",
        [delivery_id]).fetchall())
    assert errors[0][0] is None and "Connect" in errors[0][1]
    assert errors[-1] == (200, None)


async def _attempts_at_least(db: Database, delivery_id: str, n: int) -> bool:
    return int((await row(db, delivery_id))["attempts"]) >= n


async def test_410_disables_the_endpoint_until_enabled(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    gone = True
    with WebhookReceiver(lambda i, r: Answer(status=410 if gone else 200)) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url))
        first = await add_job(db, 1, dispatcher=dispatcher)
        await receiver.arrived(1)
        await eventually(lambda: _status_is(db, first, "failed"))

        later = await add_job(db, 2, dispatcher=dispatcher)
        await asyncio.sleep(0.3)
        assert len(receiver.requests) == 1, "a disabled endpoint gets nothing more"
        assert (await row(db, later))["status"] == "pending"

        endpoint = await db.read(lambda con: con.execute(
            "SELECT disabled_at IS NOT NULL, reason FROM endpoints WHERE agent = ?", [AGENT]).fetchone())
        assert endpoint is not None and endpoint[0] and "410" in endpoint[1]
        events = await db.read(lambda con: con.execute(
            "SELECT type, agent FROM events WHERE type = 'endpoint.disabled'").fetchall())
        assert events == [("endpoint.disabled", AGENT)]
        notice = await db.read(lambda con: con.execute(
            "SELECT status, payload FROM deliveries WHERE event_type = 'endpoint.disabled'").fetchone())
        assert notice is not None and notice[0] == "stream"
        assert json.loads(notice[1])["deliveryId"] == first

        from appliance.delivery import manage

        gone = False
        assert await db.write(lambda con: manage.enable_endpoint(con, AGENT, by="test"))
        dispatcher.refresh_endpoints()
        [_, again] = await receiver.arrived(2)
        assert again.headers["webhook-id"] == later
        await eventually(lambda: _status_is(db, later, "delivered"))


async def test_429_retry_after_is_honoured_for_the_whole_endpoint(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    def script(i: int, r: object) -> Answer:
        return Answer(status=429, headers={"Retry-After": "1"}) if i == 0 else Answer()

    with WebhookReceiver(script) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url, concurrency=1))
        first = await add_job(db, 1, dispatcher=dispatcher)
        await receiver.arrived(1)
        second = await add_job(db, 2, dispatcher=dispatcher)
        got = await receiver.arrived(3, within=5)
        await eventually(lambda: _status_is(db, first, "delivered"))
    assert got[0].headers["webhook-id"] == first
    assert got[1].at - got[0].at >= 0.455, "nothing is sent to a 429ing endpoint before Retry-After"
    assert {got[1].headers["webhook-id"], got[2].headers["webhook-id"]} == {first, second}
    assert (await row(db, first))["last_status"] == 200


async def test_retry_after_as_an_http_date(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    def script(i: int, r: object) -> Answer:
        if i == 0:
            return Answer(status=503, headers={"Retry-After": formatdate(time.time() + 1.5, usegmt=True)})
        return Answer()

    with WebhookReceiver(script) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url))
        await add_job(db, 1, dispatcher=dispatcher)
        got = await receiver.arrived(2, within=5)
    assert got[1].at - got[0].at >= 0.45


async def test_rotation_sends_one_signature_per_secret(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver() as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url), secrets=f"{SECRET} {OTHER_SECRET}")
        await add_job(db, 1, dispatcher=dispatcher)
        [got] = await receiver.arrived(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OTHER_SECRET):
        assert Webhook(secret).verify(got.body, got.headers)["type"] == "message.received"
        verify_webhook(got.headers, got.body, secret)


async def test_dead_after_the_schedule_then_replayed_with_the_same_id(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    from appliance.delivery import manage

    failing = True
    with WebhookReceiver(lambda i, r: Answer(status=500, body=b"boom") if failing else Answer()) as receiver:
        schedule = RetrySchedule(delays=(0, 0.01, 0.01), jitter=0.0)
        dispatcher = await start_dispatcher(webhook_config(receiver.url), schedule=schedule)
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await eventually(lambda: _status_is(db, delivery_id, "dead"))
        assert len(receiver.requests) == 3
        state = await row(db, delivery_id)
        assert state["attempts"] == 3 and state["last_status"] == 500 and "boom" in state["last_error"]
        notice = await db.read(lambda con: con.execute(
            "SELECT status, payload FROM deliveries WHERE event_type = 'delivery.failed'").fetchone())
        assert notice is not None and notice[0] == "stream"
        assert json.loads(notice[1])["deliveryId"] == delivery_id
        assert await db.read(lambda con: con.execute(
            "SELECT count(*) FROM events WHERE type = 'delivery.dead'").fetchone()) == (1,)

        failing = False
        result = await db.write(lambda con: manage.replay(con, delivery_id, now=time.time(), by="test"))
        assert result.status == "pending" and not result.endpoint_disabled
        dispatcher.wake()
        got = await receiver.arrived(4)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))
    assert {g.headers["webhook-id"] for g in got} == {delivery_id}
    state = await row(db, delivery_id)
    assert state["attempts"] == 4 and state["round_start"] == 3


async def test_timeout_is_recorded_and_retried(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver(lambda i, r: Answer(delay=1.0) if i == 0 else Answer()) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url, timeout=0.2))
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))
    first = await db.read(lambda con: con.execute(
        "SELECT status, error FROM delivery_attempts WHERE delivery_id = ? AND attempt = 1",
        [delivery_id]).fetchone())
    assert first == (None, "timed out after 0.2 s")


async def test_the_timeout_bounds_the_whole_attempt_not_each_read(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    # A 200 whose body drips one byte every 0.3 s: each read is well inside the timeout, the whole
    # answer (20 bytes, 6 s) is not. The slot must come back after the timeout, the attempt not delivered.
    def drip(index: int, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n")
        for _ in range(20):
            time.sleep(0.3)
            conn.sendall(b"x")

    with RawReceiver(drip) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url, timeout=1.0))
        started = time.monotonic()
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await eventually(lambda: _attempts_at_least(db, delivery_id, 1), within=4.0)
        took = time.monotonic() - started
        assert took < 2.5, f"the attempt held its slot {took:.1f} s with a 1 s timeout"
        first = await db.read(lambda con: con.execute(
            "SELECT status, error, latency_ms FROM delivery_attempts WHERE delivery_id = ? AND attempt = 1",
            [delivery_id]).fetchone())
        assert first is not None and first[0] == 200 and "timed out after 1 s" in first[1]
        assert first[2] < 2000
        assert (await row(db, delivery_id))["status"] == "pending"  # retried, never "delivered"


async def test_an_answer_cut_short_is_not_a_delivery(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    # 200 announced with 100 bytes, 10 sent, connection closed: the receiver may not have taken the event.
    def cut(index: int, conn: socket.socket) -> None:
        if index == 0:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        else:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with RawReceiver(cut) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url))
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))
    attempts = await db.read(lambda con: con.execute(
        "SELECT attempt, status, error FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt",
        [delivery_id]).fetchall())
    assert len(attempts) == 2, attempts
    assert attempts[0][1] == 200 and "cut short" in attempts[0][2]
    assert attempts[1][1:] == (204, None)


async def test_an_attempt_in_flight_at_shutdown_is_sent_again_with_the_same_id(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver(lambda i, r: Answer(delay=3.0) if i == 0 else Answer()) as receiver:
        config = webhook_config(receiver.url, timeout=10.0)
        dispatcher = await start_dispatcher(config)
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await receiver.arrived(1)
        await dispatcher.stop(grace=0.05)  # as good as a crash: no outcome recorded
        assert (await row(db, delivery_id))["status"] == "pending"
        assert (await row(db, delivery_id))["attempts"] == 0

        await start_dispatcher(config)
        got = await receiver.arrived(2)
        await eventually(lambda: _status_is(db, delivery_id, "delivered"))
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"] == delivery_id


async def test_concurrency_per_agent_is_bounded(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver(lambda i, r: Answer(delay=0.15)) as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url, concurrency=2))
        ids = [await add_job(db, n) for n in range(6)]
        dispatcher.wake()
        await receiver.arrived(6)
        for delivery_id in ids:
            await eventually(lambda d=delivery_id: _status_is(db, d, "delivered"))  # type: ignore[misc]
    assert receiver.max_in_flight == 2


async def test_a_wake_sends_at_once_without_waiting_for_the_poll(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver() as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url), idle_poll=30.0)
        await asyncio.sleep(0.05)  # the dispatcher is now idle, waiting up to 30 s
        started = time.monotonic()
        await add_job(db, 1, dispatcher=dispatcher)
        await receiver.arrived(1)
    assert time.monotonic() - started < 0.5


async def test_missing_secret_is_an_attempt_error_not_an_unsigned_request(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver() as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url), secrets="")
        delivery_id = await add_job(db, 1, dispatcher=dispatcher)
        await eventually(lambda: _attempts_at_least(db, delivery_id, 1))
    assert receiver.requests == []
    assert "TEST_WEBHOOK_SECRET" in (await row(db, delivery_id))["last_error"]


async def test_agents_without_a_webhook_and_held_jobs_are_not_sent(
        db: Database, webhook_config: WebhookConfig, start_dispatcher: StartDispatcher) -> None:
    with WebhookReceiver() as receiver:
        dispatcher = await start_dispatcher(webhook_config(receiver.url))
        other = await add_job(db, 1, agent=OTHER_AGENT, dispatcher=dispatcher)
        held = await add_job(db, 2, status="held")
        mine = await add_job(db, 3, dispatcher=dispatcher)
        [got] = await receiver.arrived(1)
        await asyncio.sleep(0.2)
    assert got.headers["webhook-id"] == mine and len(receiver.requests) == 1
    assert (await row(db, other))["status"] == "stream" and (await row(db, held))["status"] == "held"
