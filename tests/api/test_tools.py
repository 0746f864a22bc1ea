"""Operator tools: forwarded within the grant to a real HTTP server on loopback, refused (and never forwarded)
outside it, every call audited."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from tests.api.conftest import runtime_of
from tests.api.test_send import MINE, Client, assert_error, mail, receive, send_config
from tests.api.test_send import send_env as send_env  # the fixture, for this module's tests
from tests.delivery.receiver import Answer, Received, WebhookReceiver


def answer(index: int, request: Received) -> Answer:
    """The tool: echoes its arguments; ``{"slow": true}`` waits, ``{"broken": true}`` answers HTML."""
    args = json.loads(request.body)
    if args.get("slow"):
        return Answer(status=200, body=b"{}", delay=2.0)
    if args.get("broken"):
        return Answer(status=500, body=b"<html>oops</html>")
    if args.get("missing"):
        return Answer(status=404, body=b'{"found": false}', headers={"content-type": "application/json"})
    return Answer(status=200, body=json.dumps({"echo": args, "n": index}).encode(),
                  headers={"content-type": "application/json"})


@pytest.fixture
def tool_server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(answer) as server:
        yield server


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig], send_env: None,
                 tool_server: WebhookReceiver) -> AsyncIterator[Client]:
    tools = [{"name": "crm-lookup", "url": tool_server.url, "capability": "lookup", "timeout": 0.5,
              "description": "Find a customer", "input_schema": {"type": "object"}},
             {"name": "refund", "url": tool_server.url, "capability": "refund"}]
    async with AsyncTestClient(app=create_app(send_config(make_config, tools=tools))) as test_client:
        yield test_client


async def call(client: Client, name: str, body: dict[str, Any], token: str | None) -> Any:
    headers = {**MINE, **({"X-Capability-Token": token} if token else {})}
    return await client.post(f"/api/v1/tools/{name}", json=body, headers=headers)


async def events(client: Client) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await runtime_of(client).db.read(lambda con: con.execute(
        "SELECT type, agent, detail FROM events WHERE type LIKE 'tool.%' ORDER BY ts").fetchall())
    return [(t, a, json.loads(d)) for t, a, d in rows]


async def test_a_granted_call_is_forwarded_and_its_answer_passed_back(client: Client,
                                                                      tool_server: WebhookReceiver) -> None:
    parent = await receive(runtime_of(client), mail())
    assert "lookup" in parent.capabilities
    response = await call(client, "crm-lookup", {"customer": "alice@example.net"}, parent.token)
    assert response.status_code == 200, response.text
    assert response.json() == {"echo": {"customer": "alice@example.net"}, "n": 0}
    [got] = tool_server.requests
    assert json.loads(got.body) == {"customer": "alice@example.net"}
    assert got.headers["x-appliance-agent"] == "agent@example.test"
    assert got.headers["x-appliance-thread"] == parent.thread_id
    assert got.headers["x-appliance-decision"].startswith("d")
    assert got.headers["content-type"] == "application/json"
    assert "x-capability-token" not in got.headers and "authorization" not in got.headers

    [(kind, agent, detail)] = await events(client)
    assert (kind, agent) == ("tool.called", "agent@example.test")
    assert detail["tool"] == "crm-lookup" and detail["status"] == 200 and detail["latencyMs"] >= 0
    assert detail["argumentSha256"] == hashlib.sha256(got.body).hexdigest()
    assert detail["threadId"] == parent.thread_id and detail["tokenId"]


async def test_the_tools_status_passes_through(client: Client) -> None:
    parent = await receive(runtime_of(client), mail())
    response = await call(client, "crm-lookup", {"missing": True}, parent.token)
    assert response.status_code == 404 and response.json() == {"found": False}


async def test_outside_the_grant_nothing_is_forwarded(client: Client, tool_server: WebhookReceiver) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    assert runtime.dispatcher is not None
    claims = runtime.dispatcher.tokens.verify(parent.token)
    assert claims is not None
    expired = runtime.dispatcher.tokens.issue(agent=claims.sub, thread_id=claims.thread_id,
                                              decision_id=claims.decision_id, capabilities=["lookup", "refund"],
                                              now=claims.iat - 10 * runtime.dispatcher.tokens.ttl)

    detail = assert_error(await call(client, "refund", {"order": 1}, parent.token), 403, "capability_missing")
    assert "'refund'" in detail
    assert_error(await call(client, "refund", {"order": 1}, expired), 401, "token_invalid")
    assert_error(await call(client, "refund", {"order": 1}, None), 401, "token_invalid")
    assert_error(await call(client, "crm-lookup", {"x": 1}, parent.token + "x"), 401, "token_invalid")
    assert_error(await call(client, "no-such-tool", {}, parent.token), 404, "not_found")
    stranger = await client.post("/api/v1/tools/crm-lookup", json={})
    assert stranger.status_code == 401
    assert tool_server.requests == []
    refused = await events(client)
    assert [k for k, _, _ in refused] == ["tool.refused"] * 5
    assert [d["reason"] for _, _, d in refused] == ["capability_missing", "token_invalid", "token_invalid",
                                                   "token_invalid", "not_found"]
    assert refused[0][2]["capability"] == "refund" and refused[0][2]["status"] == 403


async def test_a_slow_or_broken_tool_is_a_gateway_error(client: Client, tool_server: WebhookReceiver) -> None:
    parent = await receive(runtime_of(client), mail())
    slow = await call(client, "crm-lookup", {"slow": True}, parent.token)
    assert "0.5" in assert_error(slow, 504, "tool_timeout")
    assert_error(await call(client, "crm-lookup", {"broken": True}, parent.token), 502, "tool_failed")
    called = await events(client)
    assert [(k, d["status"], d["reason"]) for k, _, d in called] == [("tool.called", 504, "tool_timeout"),
                                                                     ("tool.called", 502, "tool_failed")]


async def test_the_token_may_travel_in_the_body_and_is_not_forwarded(client: Client,
                                                                     tool_server: WebhookReceiver) -> None:
    parent = await receive(runtime_of(client), mail())
    response = await call(client, "crm-lookup", {"q": "x", "capabilityToken": parent.token}, None)
    assert response.status_code == 200, response.text
    assert json.loads(tool_server.requests[0].body) == {"q": "x"}


async def test_a_body_that_is_not_json_is_refused(client: Client, tool_server: WebhookReceiver) -> None:
    parent = await receive(runtime_of(client), mail())
    response = await client.post("/api/v1/tools/crm-lookup", content=b"{not json",
                                 headers={**MINE, "X-Capability-Token": parent.token})
    assert_error(response, 400, "invalid_request")
    assert tool_server.requests == []


async def test_agents_list_the_tools(client: Client) -> None:
    listing = (await client.get("/api/v1/tools", headers=MINE)).json()
    assert listing == [
        {"name": "crm-lookup", "description": "Find a customer", "capability": "lookup",
         "inputSchema": {"type": "object"}},
        {"name": "refund", "description": "", "capability": "refund", "inputSchema": {}}]
    assert (await client.get("/api/v1/tools")).status_code == 401
