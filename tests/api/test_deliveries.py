"""The delivery ledger over HTTP (admin): list, show, replay, endpoints, enable."""

from __future__ import annotations

import time

import duckdb
from litestar.testing import AsyncTestClient

from appliance.delivery.jobs import enqueue
from appliance.store.database import utc
from tests.api.conftest import ADMIN, AGENT_KEY, runtime_of
from tests.conftest import AGENT
from tests.delivery.conftest import message


async def dead_delivery(client: AsyncTestClient) -> str:  # type: ignore[type-arg]
    data = message(1)
    db = runtime_of(client).db

    def write(con: duckdb.DuckDBPyConnection) -> str:
        delivery_id = enqueue(con, agent=AGENT, event_type="message.received", data=data, email_id=data.email_id,
                              decision_id=data.decision_id, now=time.time())
        con.execute("UPDATE deliveries SET status = 'dead', attempts = 10, last_status = 500, last_error = 'boom', "
                    "next_attempt_at = NULL WHERE delivery_id = ?", [delivery_id])
        con.execute("INSERT INTO delivery_attempts VALUES (?, 10, ?, 500, 12.5, 'HTTP 500: boom')",
                    [delivery_id, utc()])
        return delivery_id

    return await db.write(write)


async def test_list_show_replay(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    delivery_id = await dead_delivery(client)
    listed = (await client.get("/api/v1/deliveries/", params={"status": "dead"}, headers=ADMIN)).json()
    assert [d["deliveryId"] for d in listed] == [delivery_id]
    assert listed[0]["status"] == "dead" and listed[0]["attempts"] == 10 and listed[0]["lastStatus"] == 500
    assert (await client.get("/api/v1/deliveries/", params={"status": "pending"}, headers=ADMIN)).json() == []

    shown = (await client.get(f"/api/v1/deliveries/{delivery_id}", headers=ADMIN)).json()
    assert shown["attempts"] == [{"attempt": 10, "ts": shown["attempts"][0]["ts"], "status": 500, "latencyMs": 12.5,
                                  "error": "HTTP 500: boom"}]
    assert shown["data"]["emailId"] == "e0001" and shown["endpoint"]["disabled"] is False

    replayed = await client.post(f"/api/v1/deliveries/{delivery_id}/replay", headers=ADMIN)
    assert replayed.status_code == 200
    assert replayed.json() == {"deliveryId": delivery_id, "status": "pending", "endpointDisabled": False}
    again = await client.post(f"/api/v1/deliveries/{delivery_id}/replay", headers=ADMIN)
    assert again.status_code == 409 and "only dead or failed" in again.json()["detail"]
    assert (await client.post("/api/v1/deliveries/msg_nope/replay", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/v1/deliveries/msg_nope", headers=ADMIN)).status_code == 404
    events = await runtime_of(client).db.read(lambda con: con.execute(
        "SELECT type, detail FROM events WHERE type = 'delivery.replayed'").fetchall())
    assert len(events) == 1 and delivery_id in events[0][1]


async def test_endpoints_and_enable(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    db = runtime_of(client).db
    await db.write(lambda con: con.execute("INSERT INTO endpoints VALUES (?, ?, '410 Gone')", [AGENT, utc()]))
    states = {s["agent"]: s for s in (await client.get("/api/v1/endpoints/", headers=ADMIN)).json()}
    assert states[AGENT]["disabled"] is True and states[AGENT]["reason"] == "410 Gone"
    enabled = await client.post(f"/api/v1/endpoints/{AGENT}/enable", headers=ADMIN)
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert (await client.post("/api/v1/endpoints/nobody@example.test/enable", headers=ADMIN)).status_code == 404


async def test_the_ledger_is_admin_only(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/api/v1/deliveries/")).status_code == 401
    assert (await client.get("/api/v1/deliveries/", headers=AGENT_KEY)).status_code == 401
    assert (await client.get("/api/v1/endpoints/", headers=AGENT_KEY)).status_code == 401
