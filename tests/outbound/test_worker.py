"""The queue and its worker over a real database file and a real SMTP peer: outcomes, retries, events, audit."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.config import OutboundConfig
from appliance.outbound.model import Delivery, DeliveryOutcome
from appliance.outbound.retry import Backoff
from appliance.outbound.transports import SmarthostTransport
from appliance.outbound.worker import OutboundWorker
from appliance.store.database import Database
from tests.outbound.conftest import HOST, audit_of, events_of, eventually, jobs_of, outbound, queue
from tests.outbound.peer import Peer

T0 = 1_800_000_000.0
DAY = 86_400.0
NO_JITTER = Backoff(jitter=0.0)


class Clock:
    """A pinned clock the test moves."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def relay(port: int, command_timeout: float = 5.0) -> SmarthostTransport:
    config = OutboundConfig(transport="smarthost", smarthost=f"127.0.0.1:{port}", require_tls=False,
                            connect_timeout=2.0)
    return SmarthostTransport(config, hostname=HOST, environ={}, command_timeout=command_timeout)


def worker(db: Database, port: int, clock: Clock, **options: Any) -> OutboundWorker:
    options.setdefault("retry_for", 5 * DAY)
    return OutboundWorker(db, relay(port), backoff=NO_JITTER, clock=clock, **options)


async def test_each_domain_is_one_job_and_each_sent_job_one_event_and_one_audit_row(db: Database) -> None:
    clock = Clock()
    message = outbound(1, ["bob@example.org", "carol@EXAMPLE.org", "dave@example.net", "bob@example.org"])
    jobs = await queue(db, message, clock.now)
    assert len(jobs) == 2
    with Peer() as peer:
        w = worker(db, peer.port, clock)
        assert await w.run_due() == 2
        assert await w.tidy() == 1
        await w.stop()
        got = peer.messages()
    assert sorted(tuple(g.rcpt_tos) for g in got) == [("bob@example.org", "carol@example.org"),
                                                      ("dave@example.net",)]
    rows = await jobs_of(db, message.email_id)
    assert {r["status"] for r in rows} == {"sent"} and {r["attempts"] for r in rows} == {1}
    assert {r["domain"] for r in rows} == {"example.org", "example.net"}
    events = await events_of(db)
    assert [t for t, _ in events] == ["message.sent", "message.sent"]
    data = events[0][1]
    assert data["emailId"] == message.email_id and data["messageId"] == message.message_id
    assert data["threadId"] == "T1" and data["reply"].startswith("250 ") and data["attempts"] == 1
    assert data["peer"] == f"127.0.0.1:{peer.port}" and data["jobId"] in jobs
    audit = await audit_of(db)
    assert [t for t, _, _ in audit] == ["outbound.sent", "outbound.sent"]
    assert all(a == message.agent and message.email_id in d for _, a, d in audit)
    raw = await db.read(lambda con: con.execute("SELECT raw, size FROM outbound_messages").fetchall())
    assert raw == [(None, len(message.raw))], "the queue's copy goes once every job ended"
    attempts = await db.read(lambda con: con.execute("SELECT status, code FROM outbound_attempts").fetchall())
    assert attempts == [("sent", 250), ("sent", 250)]


async def test_4xx_is_retried_on_the_backoff_schedule_then_sent(db: Database) -> None:
    clock = Clock()
    message = outbound(2)
    [_job] = await queue(db, message, clock.now)
    with Peer() as peer:
        peer.script.data_reply = "451 4.3.0 try later"
        w = worker(db, peer.port, clock)
        assert await w.run_due() == 1
        [row] = await jobs_of(db, message.email_id)
        assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("queued", 1, T0 + 300)
        assert row["last_code"] == 451 and "try later" in row["last_detail"]
        clock.now += 299
        assert await w.run_due() == 0, "not due before its time"
        clock.now += 1
        assert await w.run_due() == 1
        [row] = await jobs_of(db, message.email_id)
        assert row["next_attempt_at"] == clock.now + 600 and row["attempts"] == 2
        peer.script.data_reply = "250 2.0.0 Ok"
        clock.now += 600
        assert await w.run_due() == 1
        await w.stop()
        assert peer.count(message.message_id) == 1
    [row] = await jobs_of(db, message.email_id)
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert [t for t, _ in await events_of(db)] == ["message.sent"]


async def test_after_retry_for_a_temporary_failure_is_a_bounce_with_its_event(db: Database) -> None:
    clock = Clock()
    message = outbound(3)
    await queue(db, message, clock.now)
    with Peer() as peer:
        peer.script.data_reply = "452 4.2.2 mailbox full"
        w = worker(db, peer.port, clock)
        for _ in range(60):  # bounded: about 35 attempts in 5 days
            assert await w.run_due() == 1
            [row] = await jobs_of(db, message.email_id)
            if row["status"] != "queued":
                break
            clock.now = row["next_attempt_at"]
        await w.stop()
    assert row["status"] == "bounced" and clock.now == T0 + 5 * DAY
    assert row["finished_at"] == T0 + 5 * DAY
    [(kind, data)] = await events_of(db)
    assert kind == "message.bounced" and data["reason"] == "expired" and data["attempts"] == row["attempts"]
    assert data["recipients"] == [{"address": "bob@example.org", "code": 452, "status": "4.2.2",
                                   "detail": f"127.0.0.1:{peer.port} refused the message: 452 4.2.2 mailbox full"}]
    assert [t for t, _, _ in await audit_of(db)] == ["outbound.bounced"]


async def test_5xx_is_final_at_once(db: Database) -> None:
    clock = Clock()
    message = outbound(4)
    await queue(db, message, clock.now)
    with Peer() as peer:
        peer.script.data_reply = "554 5.7.1 rejected as spam"
        w = worker(db, peer.port, clock)
        await w.run_due()
        clock.now += DAY
        assert await w.run_due() == 0
        await w.stop()
    [row] = await jobs_of(db, message.email_id)
    assert (row["status"], row["attempts"], row["last_code"]) == ("failed", 1, 554)
    [(kind, data)] = await events_of(db)
    assert kind == "message.bounced" and data["reason"] == "rejected"
    assert data["recipients"][0]["status"] == "5.7.1" and data["recipients"][0]["code"] == 554
    assert [t for t, _, _ in await audit_of(db)] == ["outbound.failed"]


async def test_recipients_refused_for_now_go_on_in_a_job_of_their_own(db: Database) -> None:
    clock = Clock()
    message = outbound(5, ["bob@example.org", "full@example.org", "gone@example.org"])
    await queue(db, message, clock.now)
    with Peer() as peer:
        peer.script.rcpt = {"full@example.org": "452 4.2.2 mailbox full", "gone@example.org": "550 5.1.1 unknown"}
        w = worker(db, peer.port, clock)
        await w.run_due()
        first, second = await jobs_of(db, message.email_id)
        assert (first["status"], first["recipients"]) == ("sent", ["bob@example.org", "full@example.org",
                                                                   "gone@example.org"])
        assert (second["status"], second["recipients"], second["attempts"]) == ("queued", ["full@example.org"], 1)
        assert await w.tidy() == 0, "a job still waits: the bytes stay"
        assert second["queued_at"] == T0 and second["next_attempt_at"] == T0 + 300
        del peer.script.rcpt["full@example.org"]
        clock.now += 300
        assert await w.run_due() == 1
        await w.stop()
        assert [g.rcpt_tos for g in peer.messages()] == [["bob@example.org"], ["full@example.org"]]
    events = await events_of(db)
    assert [(t, d.get("reason"), [r if isinstance(r, str) else r["address"] for r in d["recipients"]])
            for t, d in events] == [("message.sent", None, ["bob@example.org"]),
                                    ("message.bounced", "rejected", ["gone@example.org"]),
                                    ("message.sent", None, ["full@example.org"])]


async def test_a_hanging_peer_is_bounded_by_the_attempt_timeout_and_retried(db: Database) -> None:
    clock = Clock()
    message = outbound(6)
    await queue(db, message, clock.now)
    with Peer() as peer:
        peer.script.hang = 30.0
        w = OutboundWorker(db, relay(peer.port, command_timeout=30.0), retry_for=5 * DAY, backoff=NO_JITTER,
                           clock=clock, attempt_timeout=0.5)
        started = asyncio.get_running_loop().time()
        await w.run_due()
        assert asyncio.get_running_loop().time() - started < 3
        await w.stop(grace=0.1)
    [row] = await jobs_of(db, message.email_id)
    assert row["status"] == "queued" and "timed out after 0.5 s" in row["last_detail"]


async def test_the_loop_sends_what_is_queued_when_woken_and_notifies_after_each_commit(db: Database) -> None:
    notified = []
    with Peer() as peer:
        w = OutboundWorker(db, relay(peer.port), retry_for=5 * DAY, idle_poll=30.0,
                           on_committed=lambda: notified.append(1))
        await w.start()
        message = outbound(7)
        await queue(db, message, __import__("time").time())
        w.wake()
        await asyncio.to_thread(peer.wait_for, 1)
        await eventually(lambda: _status(db, message.email_id, "sent"))
        await w.stop()
    assert notified == [1]


async def _status(db: Database, email_id: str, status: str) -> bool:
    return [r["status"] for r in await jobs_of(db, email_id)] == [status]


async def test_an_attempt_cut_short_by_stop_is_tried_again_by_the_next_worker(db: Database) -> None:
    import time

    message = outbound(8)
    await queue(db, message, time.time())
    with Peer() as peer:
        peer.script.hang = 30.0
        w = OutboundWorker(db, relay(peer.port, command_timeout=30.0), retry_for=5 * DAY)
        await w.start()
        await eventually(lambda: _in_flight(w))
        await w.stop(grace=0.1)
        assert [r["status"] for r in await jobs_of(db, message.email_id)] == ["queued"]
        peer.script.hang = 0.0
        again = OutboundWorker(db, relay(peer.port), retry_for=5 * DAY)
        assert await again.run_due() == 1
        await again.stop()
        assert peer.count(message.message_id) == 1
    assert [r["status"] for r in await jobs_of(db, message.email_id)] == ["sent"]


async def _in_flight(w: OutboundWorker) -> bool:
    return w.in_flight == 1


class Exploding:
    name = "exploding"

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        raise RuntimeError("bug in a transport")

    async def aclose(self) -> None:
        return None


async def test_a_transport_that_raises_leaves_the_job_to_be_retried(db: Database) -> None:
    clock = Clock()
    message = outbound(9)
    await queue(db, message, clock.now)
    w = OutboundWorker(db, Exploding(), retry_for=5 * DAY, backoff=NO_JITTER, clock=clock)
    await w.run_due()
    [row] = await jobs_of(db, message.email_id)
    assert row["status"] == "queued" and "bug in a transport" in row["last_detail"]


def test_the_configured_transport_is_made(make_config: Any) -> None:
    from appliance.mailauth import OfflineResolver
    from appliance.outbound.transports import CaptureTransport, DirectTransport, make_transport

    resolver = OfflineResolver()
    assert isinstance(make_transport(make_config(), reception=None, resolver=resolver), CaptureTransport)
    relayed = make_transport(make_config(outbound={"transport": "smarthost", "smarthost": "relay.example:587"}),
                             reception=None, resolver=resolver)
    assert isinstance(relayed, SmarthostTransport) and (relayed.host, relayed.port) == ("relay.example", 587)
    direct = make_transport(make_config(outbound={"transport": "direct"}), reception=None, resolver=resolver)
    assert isinstance(direct, DirectTransport) and direct.port == 25 and direct.mta_sts is not None


async def test_start_outbound_runs_the_configured_worker(db: Database, make_config: Any) -> None:
    import time

    from appliance.mailauth import OfflineResolver
    from appliance.outbound.worker import start_outbound

    notified: list[int] = []
    worker_ = await start_outbound(db, make_config(), reception=None, resolver=OfflineResolver(),
                                   on_committed=lambda: notified.append(1))
    message = outbound(10)
    await queue(db, message, time.time())
    worker_.wake()
    await eventually(lambda: _status(db, message.email_id, "sent"))
    await worker_.stop()
    [(kind, data)] = await events_of(db)
    assert kind == "message.sent" and data["peer"] == "capture" and notified == [1]
