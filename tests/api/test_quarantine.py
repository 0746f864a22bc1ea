from __future__ import annotations

from litestar.testing import AsyncTestClient

from appliance.gate import Envelope
from tests.api.conftest import ADMIN, runtime_of
from tests.conftest import AGENT


async def hold(client: AsyncTestClient, n: int) -> str:  # type: ignore[type-arg]
    raw = f"From: a@held.example\r\nSubject: held {n}\r\nMessage-ID: <h{n}@held.example>\r\n\r\nbody\r\n".encode()
    env = Envelope(client_ip="192.0.2.1", helo="h.example", mail_from="a@held.example", rcpt_to=[AGENT])
    received = await runtime_of(client).reception.receive(env, raw, agent=AGENT, intake="smtp")
    assert received.decision.action == "quarantine" and received.email_id
    return received.email_id


async def test_quarantine_list_show_release_delete(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    first, second = await hold(client, 1), await hold(client, 2)
    listed = (await client.get("/api/v1/quarantine/", headers=ADMIN)).json()
    assert {m["email_id"] for m in listed} == {first, second}
    shown = (await client.get(f"/api/v1/quarantine/{first}", headers=ADMIN)).json()
    assert shown["reason"] == "quarantined_by_rule" and "Subject: held 1" in shown["raw"]

    assert (await client.post(f"/api/v1/quarantine/{first}/release", headers=ADMIN)).status_code == 200
    db = runtime_of(client).db
    assert await db.read(lambda con: con.execute(
        "SELECT mailbox FROM messages WHERE email_id = ?", [first]).fetchone()) == ("inbox",)
    statuses = await db.read(lambda con: con.execute(
        "SELECT event_type, status FROM deliveries WHERE email_id = ? ORDER BY seq", [first]).fetchall())
    assert ("message.received", "held") not in statuses
    assert any(t == "message.received" for t, _ in statuses)

    assert (await client.delete(f"/api/v1/quarantine/{second}", headers=ADMIN)).status_code == 200
    assert (await client.get(f"/api/v1/quarantine/{second}", headers=ADMIN)).status_code == 404
    assert (await client.post(f"/api/v1/quarantine/{second}/release", headers=ADMIN)).status_code == 404
    events = await db.read(lambda con: con.execute("SELECT type FROM events ORDER BY ts").fetchall())
    assert [e[0] for e in events] == ["quarantine.released", "quarantine.deleted"]


async def test_quarantine_requires_admin(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/api/v1/quarantine/")).status_code == 401
