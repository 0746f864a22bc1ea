"""POST /api/v1/policies/replay (admin): the running appliance replays an agent's history."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from appliance.gate import Envelope
from tests.api.conftest import ADMIN, runtime_of
from tests.conftest import AGENT

BLOCK_HELD = {"defaultAction": "bounce"}
"""A policy under which the held sender is no longer let in (quarantine becomes bounce)."""


async def hold(client: AsyncTestClient) -> str:  # type: ignore[type-arg]
    raw = b"From: a@held.example\r\nSubject: held\r\nMessage-ID: <r1@held.example>\r\n\r\nbody\r\n"
    env = Envelope(client_ip="192.0.2.1", helo="h.example", mail_from="a@held.example", rcpt_to=[AGENT])
    received = await runtime_of(client).reception.receive(env, raw, agent=AGENT, intake="smtp")
    assert received.decision.action == "quarantine"
    return received.decision.decision_id


async def test_the_history_is_replayed_under_the_posted_policy(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    decision_id = await hold(client)
    answer = await client.post("/api/v1/policies/replay/", headers=ADMIN, json={
        "agent": AGENT.upper(), "since": "2000-01-01T00:00:00Z", "policy": BLOCK_HELD})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert [(f["decisionId"], f["oldAction"], f["newAction"]) for f in report["flips"]] == [
        (decision_id, "quarantine", "bounce")]


async def test_a_policy_that_does_not_validate_is_a_400_naming_its_field(
        client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answer = await client.post("/api/v1/policies/replay/", headers=ADMIN, json={
        "agent": AGENT, "since": "2000-01-01T00:00:00Z", "policy": {"defaultAction": "explode"}})
    assert answer.status_code == 400 and "defaultAction" in answer.text


async def test_an_unknown_agent_is_a_400_and_a_stranger_a_401(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    body = {"agent": "nobody@example.test", "since": "2000-01-01T00:00:00Z", "policy": BLOCK_HELD}
    unknown = await client.post("/api/v1/policies/replay/", headers=ADMIN, json=body)
    assert unknown.status_code == 400 and "nobody@example.test" in unknown.text
    assert (await client.post("/api/v1/policies/replay/", json=body)).status_code == 401
