from __future__ import annotations

from litestar.testing import AsyncTestClient

from appliance.gate import Envelope
from tests.api.conftest import ADMIN, runtime_of
from tests.conftest import AGENT


async def receive(client: AsyncTestClient, sender: str, n: int) -> None:  # type: ignore[type-arg]
    raw = f"From: {sender}\r\nSubject: s{n}\r\nMessage-ID: <a{n}@x.example>\r\n\r\nbody\r\n".encode()
    env = Envelope(client_ip="192.0.2.1", helo="h.example", mail_from=sender, rcpt_to=[AGENT])
    await runtime_of(client).reception.receive(env, raw, agent=AGENT, intake="smtp")


async def test_audit_api_requires_the_admin_token(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/api/v1/audit/")).status_code == 401
    assert (await client.get("/api/v1/audit/", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_audit_listing_filters_and_pages(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for n in range(5):
        await receive(client, "a@example.net" if n % 2 == 0 else "z@stranger.example", n)
    page = (await client.get("/api/v1/audit/", params={"action": "accept", "limit": 2}, headers=ADMIN)).json()
    seq = page["columns"].index("seq")
    assert [r[page["columns"].index("message_id")] for r in page["rows"]] == ["<a0@x.example>", "<a2@x.example>"]
    after = page["rows"][-1][seq]
    rest = (await client.get("/api/v1/audit/", params={"action": "accept", "after": after},
                             headers=ADMIN)).json()
    assert [r[rest["columns"].index("message_id")] for r in rest["rows"]] == ["<a4@x.example>"]
    by_sender = (await client.get("/api/v1/audit/", params={"sender": "Z@Stranger.example"}, headers=ADMIN)).json()
    assert len(by_sender["rows"]) == 2
    none_yet = (await client.get("/api/v1/audit/", params={"until": "2000-01-01T00:00:00Z"}, headers=ADMIN)).json()
    assert none_yet["rows"] == []


async def test_sql_is_read_only(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    await receive(client, "a@example.net", 1)
    ok = await client.post("/api/v1/audit/sql", json={"sql": "SELECT action, count(*) AS n FROM decisions "
                                                               "GROUP BY action"}, headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["rows"] == [["accept", 1]]
    refused = await client.post("/api/v1/audit/sql", json={"sql": "DELETE FROM decisions"}, headers=ADMIN)
    assert refused.status_code == 400
    assert "only SELECT statements are allowed" in refused.text


async def test_verify_reports_a_tampered_row(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for n in range(3):
        await receive(client, "a@example.net", n)
    assert (await client.get("/api/v1/audit/verify", headers=ADMIN)).json()["ok"] is True
    await runtime_of(client).db.write(lambda con: con.execute("UPDATE decisions SET action = 'bounce' WHERE seq = 2"))
    report = (await client.get("/api/v1/audit/verify", headers=ADMIN)).json()
    assert report["ok"] is False and report["broken_seq"] == 2


async def test_usage_is_charged_to_the_thread(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    from tests.api.conftest import AGENT_KEY

    await receive(client, "a@example.net", 1)
    thread = (await client.post("/api/v1/audit/sql", json={"sql": "SELECT thread_id FROM decisions"},
                                headers=ADMIN)).json()["rows"][0][0]
    unauth = await client.post("/api/v1/usage", json={"threadId": thread, "tokens": 5})
    assert unauth.status_code == 401
    charged = await client.post("/api/v1/usage", json={"threadId": thread, "tokens": 500}, headers=AGENT_KEY)
    assert charged.status_code == 200, charged.text
    assert charged.json()["threadTotal"] >= 500
    unknown = await client.post("/api/v1/usage", json={"threadId": "T-nope", "tokens": 5}, headers=AGENT_KEY)
    assert unknown.status_code == 404
    bad = await client.post("/api/v1/usage", json={"threadId": thread, "tokens": -1}, headers=AGENT_KEY)
    assert bad.status_code == 400
