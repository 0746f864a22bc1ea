"""Agents act: replies and new mail through the API, each refusal class, idempotency, the outbox, DKIM."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.audit import verify_chain
from appliance.config import ApplianceConfig
from appliance.delivery.render import render_event
from appliance.gate import Envelope
from appliance.mailauth.keys import generate_key, public_record, selectors_for, write_key
from appliance.runtime import Runtime
from tests.api.conftest import runtime_of
from tests.conftest import AGENT, OTHER_AGENT

MINE = {"Authorization": "Bearer send-agent-key"}
THEIRS = {"Authorization": "Bearer send-other-key"}
ADMIN = {"Authorization": "Bearer admin-secret"}
WEBHOOK_SECRET = "whsec_" + "c2VuZC10ZXN0LXdlYmhvb2stc2VjcmV0LTEyMzQ1Ng=="

SEND_POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
capabilities = ["read", "send_email", "lookup"]

[[senders]]
match = { domain = "plain.example" }
capabilities = ["read"]

[outbound]
allowRecipients = ["example.net", "*.partner.example"]
maxRecipients = 3

[[outbound.contentGuards]]
reject = "/wire transfer/i"
reason = "payment_instruction"
"""
"""example.net senders grant send_email (and lookup, a tool's capability); plain.example only read."""

Client = AsyncTestClient  # type: ignore[type-arg]


def send_config(make_config: Callable[..., ApplianceConfig], policy: str = SEND_POLICY,
                **overrides: Any) -> ApplianceConfig:
    """Both test agents under ``policy``, each with an API key (and AGENT a webhook secret to guard)."""
    config = make_config(policies={AGENT: policy, OTHER_AGENT: policy}, **overrides)
    agents = [msgspec.structs.replace(config.agents[0], api_key_env="TEST_SEND_AGENT_KEY",
                                      webhook_url="http://127.0.0.1:9/hook", webhook_secret_env="TEST_SEND_WHSEC"),
              msgspec.structs.replace(config.agents[1], api_key_env="TEST_SEND_OTHER_KEY")]
    return msgspec.structs.replace(config, agents=agents)


@pytest.fixture
def send_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("TEST_SEND_AGENT_KEY", "send-agent-key")
    monkeypatch.setenv("TEST_SEND_OTHER_KEY", "send-other-key")
    monkeypatch.setenv("TEST_SEND_WHSEC", WEBHOOK_SECRET)


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig], send_env: None) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(send_config(make_config))) as test_client:
        yield test_client


def mail(sender: str = "alice@example.net", *, subject: str = "Quarterly report", reply_to: str | None = None,
         message_id: str = "<report-1@example.net>", to: str = AGENT) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Alice <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if reply_to:
        msg["Reply-To"] = reply_to
    msg.set_content("Could you send me the numbers?\n")
    return msg.as_bytes()


class Received(msgspec.Struct, frozen=True, kw_only=True):
    email_id: str
    thread_id: str
    token: str
    capabilities: list[str]


async def receive(runtime: Runtime, raw: bytes, *, sender: str = "alice@example.net", agent: str = AGENT,
                  now: float | None = None) -> Received:
    """Receive ``raw`` through the gate, and render its event as the agent gets it (token included)."""
    env = Envelope(client_ip="192.0.2.1", helo="mail.example.net", mail_from=sender, rcpt_to=[agent])
    received = await runtime.reception.receive(env, raw, agent=agent, intake="smtp")
    assert received.email_id is not None, received.decision
    email_id = received.email_id
    row = await runtime.db.read(lambda con: con.execute(
        "SELECT created_at, payload FROM deliveries WHERE email_id = ? AND event_type = 'message.received'",
        [email_id]).fetchone())
    assert row is not None and runtime.dispatcher is not None
    event = json.loads(render_event("message.received", row[0], row[1], runtime.dispatcher.tokens, now))
    data = event["data"]
    return Received(email_id=email_id, thread_id=data["threadId"], token=data["capabilityToken"],
                    capabilities=data["capabilities"])


async def reply(client: Client, parent: Received | str, body: dict[str, Any], *, token: str | None = None,
                headers: dict[str, str] | None = None) -> Any:
    email_id = parent if isinstance(parent, str) else parent.email_id
    if token is None and not isinstance(parent, str):
        token = parent.token
    extra = {"X-Capability-Token": token} if token else {}
    return await client.post(f"/api/v1/messages/{email_id}/reply", json=body,
                             headers={**MINE, **extra, **(headers or {})})


async def decisions(runtime: Runtime, **where: str) -> list[dict[str, Any]]:
    clause = " AND ".join(f"{k} = ?" for k in where) or "TRUE"
    rows = await runtime.db.read(lambda con: con.execute(
        f"SELECT decision_id, agent, action, reason, rcpt_to, capabilities, thread_id, token_id, detail, intake, "
        f"header_from, message_id, body_sha256 FROM decisions WHERE intake = 'outbound' AND {clause} ORDER BY seq",
        list(where.values())).fetchall())
    keys = ("decision_id", "agent", "action", "reason", "rcpt_to", "capabilities", "thread_id", "token_id", "detail",
            "intake", "header_from", "message_id", "body_sha256")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def assert_error(response: Any, status: int, reason: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == reason, body
    return str(body["detail"])


# -- replies ------------------------------------------------------------------------------------


async def test_a_reply_is_queued_with_its_sent_copy_audit_row_and_job(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    response = await reply(client, parent, {"text": "Here are the numbers."})
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["status"] == "queued" and result["threadId"] == parent.thread_id
    assert result["messageId"].startswith("<") and result["emailId"].startswith("e")
    email_id = result["emailId"]

    row = await runtime.db.read(lambda con: con.execute(
        "SELECT mailbox, agent, sender, thread_id, message_id, subject, raw FROM messages WHERE email_id = ?",
        [email_id]).fetchone())
    assert row is not None
    mailbox, agent, sender, thread_id, message_id, subject, raw = row
    assert (mailbox, agent, sender, thread_id, message_id) == ("sent", AGENT, AGENT, parent.thread_id,
                                                               result["messageId"])
    assert subject == "Re: Quarterly report"
    assert b"In-Reply-To: <report-1@example.net>" in raw and b"To: alice@example.net" in raw
    jobs = await runtime.db.read(lambda con: con.execute(
        "SELECT domain, recipients, status FROM outbound_jobs WHERE email_id = ?", [email_id]).fetchall())
    assert jobs == [("example.net", ["alice@example.net"], "queued")]

    [audit] = await decisions(runtime, action="send")
    assert audit["rcpt_to"] == ["alice@example.net"] and audit["header_from"] == AGENT
    assert audit["thread_id"] == parent.thread_id and audit["message_id"] == result["messageId"]
    assert audit["capabilities"] == parent.capabilities and audit["token_id"] and audit["body_sha256"]
    assert audit["decision_id"][1:] == email_id[1:]
    report = await runtime.db.read(verify_chain)
    assert report.ok, report.detail


async def test_a_reply_and_its_parent_are_both_the_agents_messages(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    sent = (await reply(client, parent, {"text": "Thanks.", "cc": ["bob@example.net"]})).json()

    inbox = (await client.get(f"/api/v1/messages/{parent.email_id}", headers=MINE)).json()
    assert inbox["mailbox"] == "inbox" and inbox["from"] == "alice@example.net" and inbox["to"] == [AGENT]
    assert inbox["threadId"] == parent.thread_id and inbox["subject"] == "Quarterly report"
    assert inbox["attachments"] == [] and inbox["size"] > 0 and inbox["receivedAt"]

    mine = (await client.get(f"/api/v1/messages/{sent['emailId']}", headers=MINE)).json()
    assert mine["mailbox"] == "sent" and mine["from"] == AGENT and mine["to"] == ["alice@example.net"]
    assert mine["cc"] == ["bob@example.net"] and mine["messageId"] == sent["messageId"]

    for email_id in (parent.email_id, sent["emailId"], "e-nothing"):
        assert_error(await client.get(f"/api/v1/messages/{email_id}", headers=THEIRS), 404, "not_found")
    assert (await client.get(f"/api/v1/messages/{parent.email_id}")).status_code == 401


async def test_a_reply_goes_to_the_verified_sender_not_to_a_foreign_reply_to(client: Client) -> None:
    runtime = runtime_of(client)
    forged = await receive(runtime, mail(reply_to="attacker@evil.example", message_id="<a@example.net>"))
    sent = (await reply(client, forged, {"text": "ok"})).json()
    mine = (await client.get(f"/api/v1/messages/{sent['emailId']}", headers=MINE)).json()
    assert mine["to"] == ["alice@example.net"]

    aligned = await receive(runtime, mail(reply_to="support@example.net", message_id="<b@example.net>"))
    sent = (await reply(client, aligned, {"text": "ok"})).json()
    mine = (await client.get(f"/api/v1/messages/{sent['emailId']}", headers=MINE)).json()
    assert mine["to"] == ["support@example.net"]


async def test_a_token_of_a_read_only_grant_still_allows_the_reply_to_its_sender(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail("carol@plain.example", message_id="<c@plain.example>"),
                           sender="carol@plain.example")
    assert parent.capabilities == ["read"]
    assert (await reply(client, parent, {"text": "Noted."})).status_code == 202

    detail = assert_error(await reply(client, parent, {"text": "fyi", "cc": ["dave@example.net"]}),
                          403, "capability_missing")
    assert "send_email" in detail
    new = await client.post("/api/v1/messages", headers={**MINE, "X-Capability-Token": parent.token},
                            json={"to": ["dave@example.net"], "subject": "Hi", "text": "hello"})
    assert "send_email" in assert_error(new, 403, "capability_missing")
    refused = await decisions(runtime, action="refuse")
    assert [d["reason"] for d in refused] == ["capability_missing", "capability_missing"]
    assert all(d["capabilities"] == ["read"] and d["token_id"] for d in refused)


async def test_the_capability_token_may_travel_in_the_body(client: Client) -> None:
    parent = await receive(runtime_of(client), mail())
    response = await client.post(f"/api/v1/messages/{parent.email_id}/reply", headers=MINE,
                                 json={"text": "ok", "capabilityToken": parent.token})
    assert response.status_code == 202, response.text


# -- tokens -------------------------------------------------------------------------------------


async def test_missing_expired_tampered_and_foreign_tokens_are_401_and_audited(client: Client) -> None:
    runtime = runtime_of(client)
    assert runtime.dispatcher is not None
    tokens = runtime.dispatcher.tokens
    parent = await receive(runtime, mail())
    claims = tokens.verify(parent.token)
    assert claims is not None
    expired = tokens.issue(agent=AGENT, thread_id=parent.thread_id, decision_id=claims.decision_id,
                           capabilities=claims.capabilities, now=time.time() - 10 * tokens.ttl)
    head, payload, signature = parent.token.split(".")
    tampered_claims = msgspec.json.decode(__import__("base64").urlsafe_b64decode(payload + "=="))
    tampered_claims["capabilities"] = ["read", "send_email", "admin"]
    forged_payload = __import__("base64").urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=")
    tampered = f"{head}.{forged_payload.decode()}.{signature}"
    foreign = tokens.issue(agent=OTHER_AGENT, thread_id=parent.thread_id, decision_id=claims.decision_id,
                           capabilities=["send_email"])

    assert "no capability token" in assert_error(await reply(client, parent.email_id, {"text": "x"}),
                                                 401, "token_invalid")
    assert "expired" in assert_error(await reply(client, parent, {"text": "x"}, token=expired), 401, "token_invalid")
    assert "not genuine" in assert_error(await reply(client, parent, {"text": "x"}, token=tampered),
                                         401, "token_invalid")
    assert "another agent" in assert_error(await reply(client, parent, {"text": "x"}, token=foreign),
                                           401, "token_invalid")
    refused = await decisions(runtime, action="refuse")
    assert [d["reason"] for d in refused] == ["token_invalid"] * 4
    assert all(d["agent"] == AGENT and d["thread_id"] is not None for d in refused)
    assert await runtime.db.read(lambda con: con.execute(
        "SELECT count(*) FROM messages WHERE mailbox = 'sent'").fetchone()) == (0,)


async def test_a_token_replies_only_in_its_own_thread(client: Client) -> None:
    runtime = runtime_of(client)
    first = await receive(runtime, mail(message_id="<t1@example.net>", subject="One"))
    second = await receive(runtime, mail("erin@example.net", message_id="<t2@example.net>", subject="Two"),
                           sender="erin@example.net")
    assert first.thread_id != second.thread_id
    assert_error(await reply(client, second, {"text": "x"}, token=first.token), 403, "token_thread_mismatch")


async def test_only_the_agents_own_inbox_messages_can_be_replied_to(client: Client) -> None:
    runtime = runtime_of(client)
    theirs = await receive(runtime, mail(to=OTHER_AGENT), agent=OTHER_AGENT)
    mine = await receive(runtime, mail(message_id="<m@example.net>"))
    assert_error(await reply(client, theirs.email_id, {"text": "x"}, token=mine.token), 404, "not_found")
    assert_error(await reply(client, "e000000000000nothing", {"text": "x"}, token=mine.token), 404, "not_found")
    sent = (await reply(client, mine, {"text": "x"})).json()
    assert_error(await reply(client, sent["emailId"], {"text": "x"}, token=mine.token), 404, "not_found")
    assert "not_found" in [d["reason"] for d in await decisions(runtime, action="refuse")]


# -- policy refusals ----------------------------------------------------------------------------


async def test_new_mail_needs_send_email_and_allowed_recipients(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    headers = {**MINE, "X-Capability-Token": parent.token}

    ok = await client.post("/api/v1/messages", headers=headers,
                           json={"to": ["bob@example.net"], "cc": ["x@eu.partner.example"], "subject": "Plan",
                                 "text": "Draft attached soon."})
    assert ok.status_code == 202, ok.text
    assert ok.json()["threadId"] != parent.thread_id

    outside = await client.post("/api/v1/messages", headers=headers,
                                json={"to": ["mallory@evil.example"], "subject": "Hi", "text": "hello"})
    assert "mallory@evil.example" in assert_error(outside, 403, "recipient_not_allowed")
    crowd = await client.post("/api/v1/messages", headers=headers,
                              json={"to": [f"p{i}@example.net" for i in range(4)], "subject": "Hi", "text": "hi"})
    assert_error(crowd, 403, "too_many_recipients")
    assert_error(await client.post("/api/v1/messages", headers=headers, json={"to": ["bob@example.net"],
                                                                            "text": "no subject"}),
                 400, "invalid_request")
    assert_error(await client.post("/api/v1/messages", headers=headers,
                                   json={"to": ["not an address"], "subject": "s", "text": "t"}),
                 400, "invalid_request")
    reasons = [d["reason"] for d in await decisions(runtime)]
    assert reasons == [None, "recipient_not_allowed", "too_many_recipients", "invalid_request", "invalid_request"]


async def test_secrets_are_not_mailed_out(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    for text in (f"my key is {MINE['Authorization'].split()[1]}", "the admin token: admin-secret",
                 f"webhook secret {WEBHOOK_SECRET}", f"token {parent.token}",
                 "the other agent's key, spaced: s e n d - o t h e r - k e y"):
        response = await reply(client, parent, {"text": text})
        detail = assert_error(response, 403, "secret_leak_suspected")
        assert "admin-secret" not in detail and "send-agent-key" not in detail
    assert await runtime.db.read(lambda con: con.execute(
        "SELECT count(*) FROM outbound_jobs").fetchone()) == (0,)


async def test_a_content_guard_refuses_with_its_own_reason(client: Client) -> None:
    parent = await receive(runtime_of(client), mail())
    assert_error(await reply(client, parent, {"text": "Please make the wire transfer today."}),
                 403, "payment_instruction")
    assert_error(await reply(client, parent, {"text": "ok", "html": "<p style=display:none>WIRE TRANSFER</p>"}),
                 403, "payment_instruction")


async def test_sending_over_the_outbound_rate_limit_is_429(make_config: Callable[..., ApplianceConfig],
                                                           send_env: None) -> None:
    policy = SEND_POLICY.replace("maxRecipients = 3", "maxRecipients = 3\nrateLimit = { perHour = 2 }")
    async with AsyncTestClient(app=create_app(send_config(make_config, policy))) as client:
        parent = await receive(runtime_of(client), mail())
        for _ in range(2):
            assert (await reply(client, parent, {"text": "again"})).status_code == 202
        assert "perHour" in assert_error(await reply(client, parent, {"text": "again"}), 429, "outbound_rate_limited")


async def test_a_send_counts_toward_the_rate_after_a_restart(make_config: Callable[..., ApplianceConfig],
                                                             send_env: None) -> None:
    policy = SEND_POLICY.replace("maxRecipients = 3", "maxRecipients = 3\nrateLimit = { perHour = 1 }")
    config = send_config(make_config, policy)
    async with AsyncTestClient(app=create_app(config)) as client:
        parent = await receive(runtime_of(client), mail())
        assert (await reply(client, parent, {"text": "once"})).status_code == 202
    async with AsyncTestClient(app=create_app(config)) as client:
        assert_error(await reply(client, parent, {"text": "twice"}), 429, "outbound_rate_limited")


# -- idempotency --------------------------------------------------------------------------------


async def test_an_idempotency_key_answers_a_retry_with_the_first_result(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    key = {"Idempotency-Key": "retry-1"}
    first = await reply(client, parent, {"text": "Once only.", "cc": ["bob@example.net"]}, headers=key)
    assert first.status_code == 202
    again = await reply(client, parent, {"cc": ["bob@example.net"], "text": "Once only."}, headers=key)
    assert again.status_code in (200, 202) and again.json() == first.json()
    sent = await runtime.db.read(lambda con: con.execute(
        "SELECT count(*) FROM messages WHERE mailbox = 'sent'").fetchone())
    assert sent == (1,)

    other = await reply(client, parent, {"text": "Something else."}, headers=key)
    assert first.json()["emailId"] in assert_error(other, 422, "idempotency_conflict")
    # another agent's identical key is its own
    theirs = await receive(runtime, mail(to=OTHER_AGENT), agent=OTHER_AGENT)
    response = await client.post(f"/api/v1/messages/{theirs.email_id}/reply", json={"text": "Once only."},
                                 headers={**THEIRS, **key, "X-Capability-Token": theirs.token})
    assert response.status_code == 202 and response.json()["emailId"] != first.json()["emailId"]
    assert_error(await reply(client, parent, {"text": "x"}, headers={"Idempotency-Key": "has space"}),
                 400, "invalid_request")


# -- outbox -------------------------------------------------------------------------------------


async def test_the_outbox_lists_what_an_agent_sent_with_each_recipients_status(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    ids = [(await reply(client, parent, {"text": f"n{i}", "cc": ["bob@example.net"]})).json()["emailId"]
           for i in range(3)]
    theirs = await receive(runtime, mail(to=OTHER_AGENT), agent=OTHER_AGENT)
    other = await client.post(f"/api/v1/messages/{theirs.email_id}/reply", json={"text": "x"},
                              headers={**THEIRS, "X-Capability-Token": theirs.token})

    listing = (await client.get("/api/v1/outbox", headers=MINE)).json()
    assert [m["emailId"] for m in listing] == ids[::-1]
    first = listing[-1]
    # The capture transport may already have delivered it: queued, or sent with its one attempt.
    assert first["status"] in ("queued", "sent") and first["agent"] == AGENT and first["to"] == ["alice@example.net"]
    assert [(r["address"], r["status"]) for r in first["recipients"]] == [
        ("alice@example.net", first["status"]), ("bob@example.net", first["status"])]
    assert all(r["attempts"] == (0 if first["status"] == "queued" else 1) for r in first["recipients"])
    page = (await client.get("/api/v1/outbox", params={"limit": 1, "after": ids[2]}, headers=MINE)).json()
    assert [m["emailId"] for m in page] == [ids[1]]
    everyone = (await client.get("/api/v1/outbox", headers=ADMIN)).json()
    assert other.json()["emailId"] in [m["emailId"] for m in everyone] and len(everyone) == 4
    assert (await client.get(f"/api/v1/outbox/{ids[0]}", headers=MINE)).json()["emailId"] == ids[0]
    assert_error(await client.get(f"/api/v1/outbox/{ids[0]}", headers=THEIRS), 404, "not_found")
    assert (await client.get(f"/api/v1/outbox/{ids[0]}", headers=ADMIN)).status_code == 200
    assert (await client.get("/api/v1/outbox")).status_code == 401


# -- DKIM ---------------------------------------------------------------------------------------


async def test_a_reply_is_dkim_signed_once_keys_exist_and_dkimpy_verifies_it(client: Client) -> None:
    runtime = runtime_of(client)
    data_dir: Path = runtime.config.data_path
    records = {}
    for selector, algorithm in selectors_for(runtime.config.outbound.dkim_selector).items():
        key = generate_key(selector, algorithm)
        write_key(data_dir, "example.test", key)
        record = public_record("example.test", key)
        records[record.name + "."] = record.value.encode()
    parent = await receive(runtime, mail())
    sent = (await reply(client, parent, {"text": "Signed, sealed, delivered."})).json()
    raw = await runtime.db.read(lambda con: con.execute(
        "SELECT raw FROM outbound_messages WHERE email_id = ?", [sent["emailId"]]).fetchone())
    assert raw is not None
    queued = bytes(raw[0])
    assert queued.startswith(b"DKIM-Signature:") and queued.count(b"DKIM-Signature:") == 2

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode(), b"")

    verifier = dkim.DKIM(queued)
    assert verifier.verify(idx=0, dnsfunc=dns)
    assert verifier.verify(idx=1, dnsfunc=dns)
    [audit] = await runtime.db.read(lambda con: con.execute(
        "SELECT dkim FROM decisions WHERE intake = 'outbound' AND action = 'send'").fetchall())
    assert audit == ("signed",)


async def test_without_keys_mail_goes_out_unsigned(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    sent = (await reply(client, parent, {"text": "plain"})).json()
    raw = await runtime.db.read(lambda con: con.execute(
        "SELECT raw FROM outbound_messages WHERE email_id = ?", [sent["emailId"]]).fetchone())
    assert raw is not None and b"DKIM-Signature" not in bytes(raw[0])


# -- usage (issue "Agents act", 6) -----------------------------------------------------------------


async def test_usage_still_charges_the_thread_budget_after_a_send(client: Client) -> None:
    runtime = runtime_of(client)
    parent = await receive(runtime, mail())
    assert (await reply(client, parent, {"text": "reply"})).status_code == 202
    response = await client.post("/api/v1/usage", headers=MINE, json={"threadId": parent.thread_id, "tokens": 700})
    assert response.status_code == 200, response.text
    assert response.json()["charged"] == 700 and response.json()["threadTotal"] >= 700
