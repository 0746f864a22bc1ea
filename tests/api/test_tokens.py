"""``POST /api/v1/tokens/introspect``: what a capability token grants."""

from __future__ import annotations

import time

from litestar.testing import AsyncTestClient

from tests.api.conftest import ADMIN, AGENT_KEY, runtime_of
from tests.conftest import AGENT, OTHER_AGENT


def issue(client: AsyncTestClient, agent: str = AGENT, now: float | None = None) -> str:  # type: ignore[type-arg]
    dispatcher = runtime_of(client).dispatcher
    assert dispatcher is not None
    return dispatcher.tokens.issue(agent=agent, thread_id="T1", decision_id="d1", email_id="e1",
                                   capabilities=["read", "reply"], now=now)


async def test_a_valid_token_is_active_with_its_grants(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answer = await client.post("/api/v1/tokens/introspect", json={"token": issue(client)}, headers=AGENT_KEY)
    assert answer.status_code == 200
    body = answer.json()
    assert body["active"] is True and body["agent"] == AGENT and body["threadId"] == "T1"
    assert body["decisionId"] == "d1" and body["capabilities"] == ["read", "reply"] and body["exp"] > time.time()


async def test_form_encoded_as_in_rfc_7662(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answer = await client.post("/api/v1/tokens/introspect", content=f"token={issue(client)}".encode(),
                               headers={**AGENT_KEY, "content-type": "application/x-www-form-urlencoded"})
    assert answer.json()["active"] is True


async def test_expired_tampered_and_foreign_tokens_are_inactive(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    expired = issue(client, now=time.time() - 7200)
    good = issue(client)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    theirs = issue(client, agent=OTHER_AGENT)
    for token in (expired, tampered, theirs, "not-a-token"):
        answer = await client.post("/api/v1/tokens/introspect", json={"token": token}, headers=AGENT_KEY)
        assert answer.status_code == 200 and answer.json() == {"active": False}
    admin = await client.post("/api/v1/tokens/introspect", json={"token": theirs}, headers=ADMIN)
    assert admin.json()["active"] is True and admin.json()["agent"] == OTHER_AGENT


async def test_introspection_needs_a_key(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.post("/api/v1/tokens/introspect", json={"token": "x"})).status_code == 401
    bad = await client.post("/api/v1/tokens/introspect", content=b"{", headers=AGENT_KEY)
    assert bad.status_code == 400
