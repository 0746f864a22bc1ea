"""The Outbox driven directly over a real Runtime: idempotency under concurrency, failed commits, the read
side following the worker, tokens' reasons, the secrets it guards, and ``appliance outbox``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from appliance.cli import main
from appliance.config import ApplianceConfig
from appliance.delivery.tokens import TokenIssuer
from appliance.gate.outbound import outbound_rate_key
from appliance.outbound import service
from appliance.outbound.idempotency import fingerprint
from appliance.outbound.model import BlobRef, SendRequest
from appliance.outbound.service import Outbox, Refused, appliance_secrets, list_sent, sent_message, verify_token
from appliance.outbound.transports import CaptureTransport
from appliance.outbound.worker import OutboundWorker
from appliance.runtime import Runtime
from tests.api.test_send import SEND_POLICY, Received, mail, receive, send_config
from tests.api.test_send import send_env as send_env  # the fixture, for this module's tests
from tests.conftest import AGENT, OTHER_AGENT

POLICY = SEND_POLICY.replace('allowRecipients = ["example.net"', 'allowRecipients = ["example.test", "example.net"')
"""The send policy, and local agents may be written to (the capture transport hands their mail to their gate)."""


@pytest.fixture
async def runtime(make_config: Callable[..., ApplianceConfig], send_env: None) -> AsyncIterator[Runtime]:
    rt = Runtime(send_config(make_config, POLICY))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def outbox_of(runtime: Runtime) -> Outbox:
    assert runtime.outbox is not None
    return runtime.outbox


async def count(runtime: Runtime, sql: str) -> int:
    row = await runtime.db.read(lambda con: con.execute(sql).fetchone())
    return int(row[0]) if row else 0


async def test_concurrent_requests_with_one_key_send_once(runtime: Runtime) -> None:
    parent = await receive(runtime, mail())
    request = SendRequest(text="once")
    outcomes = await asyncio.gather(
        *(outbox_of(runtime).submit(AGENT, "reply", parent.email_id, request, parent.token, "same-key")
          for _ in range(5)), return_exceptions=True)
    results = [o for o in outcomes if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, Refused)]
    assert results and len(results) + len(conflicts) == 5
    assert {r.email_id for r in results} == {results[0].email_id}
    assert all(c.status == 409 and c.reason == "idempotency_conflict" for c in conflicts)
    assert await count(runtime, "SELECT count(*) FROM messages WHERE mailbox = 'sent'") == 1
    again = await outbox_of(runtime).submit(AGENT, "reply", parent.email_id, request, parent.token, "same-key")
    assert again == results[0]


async def test_a_send_whose_commit_fails_leaves_nothing_and_is_not_counted(runtime: Runtime,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    parent = await receive(runtime, mail())

    def broken(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service, "enqueue", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await outbox_of(runtime).submit(AGENT, "reply", parent.email_id, SendRequest(text="x"), parent.token, "k1")
    assert await count(runtime, "SELECT count(*) FROM messages WHERE mailbox = 'sent'") == 0
    assert await count(runtime, "SELECT count(*) FROM idempotency_keys") == 0
    assert await count(runtime, "SELECT count(*) FROM decisions WHERE intake = 'outbound'") == 0
    assert outbox_of(runtime).limits.count_since(outbound_rate_key(AGENT), 0) == 0
    monkeypatch.undo()
    result = await outbox_of(runtime).submit(AGENT, "reply", parent.email_id, SendRequest(text="x"), parent.token,
                                             "k1")
    assert result.status == "queued"
    assert outbox_of(runtime).limits.count_since(outbound_rate_key(AGENT), 0) == 1


async def test_the_outbox_follows_each_recipient_to_its_end(runtime: Runtime) -> None:
    assert runtime.outbound is not None
    await runtime.outbound.stop()  # this test's worker alone runs the jobs (else the two share them)
    parent = await receive(runtime, mail())
    result = await outbox_of(runtime).submit(AGENT, "reply", parent.email_id,
                                             SendRequest(text="hello", cc=[OTHER_AGENT]), parent.token, None)
    before = await runtime.db.read(lambda con: sent_message(con, result.email_id))
    assert before is not None and before.status == "queued"
    assert [(r.address, r.status) for r in before.recipients] == [("alice@example.net", "queued"),
                                                                  (OTHER_AGENT, "queued")]

    worker = OutboundWorker(runtime.db, CaptureTransport(runtime.reception, hostname="mx.example.test"),
                            retry_for=3600)
    assert await worker.run_due() == 2
    after = await runtime.db.read(lambda con: sent_message(con, result.email_id))
    assert after is not None
    by_address = {r.address: r for r in after.recipients}
    assert by_address["alice@example.net"].status == "sent" and by_address["alice@example.net"].attempts == 1
    # the other agent's gate does not know example.test senders: it bounces, and so the recipient
    assert by_address[OTHER_AGENT].status == "bounced" and by_address[OTHER_AGENT].last_code == 550
    assert after.status == "bounced"
    assert await runtime.db.read(lambda con: sent_message(con, result.email_id, agent=OTHER_AGENT)) is None


async def test_sent_listing_pages_newest_first(runtime: Runtime) -> None:
    parent = await receive(runtime, mail())
    ids = []
    for i in range(4):
        r = await outbox_of(runtime).submit(AGENT, "reply", parent.email_id, SendRequest(text=str(i)), parent.token,
                                            None)
        ids.append(r.email_id)
    pages: list[str] = []
    after = None
    while True:
        page = await runtime.db.read(lambda con, cursor=after: list_sent(con, agent=AGENT, limit=3, after=cursor))
        if not page:
            break
        pages += [m.email_id for m in page]
        after = page[-1].email_id
    assert pages == ids[::-1]
    assert await runtime.db.read(lambda con: list_sent(con, agent=OTHER_AGENT)) == []


async def test_a_missing_blob_is_refused_before_anything_is_sent(runtime: Runtime) -> None:
    parent = await receive(runtime, mail())
    with pytest.raises(Refused) as refused:
        await outbox_of(runtime).submit(AGENT, "reply", parent.email_id,
                                        SendRequest(text="x", attachments=[BlobRef(blob_id="bnope")]), parent.token,
                                        None)
    assert (refused.value.status, refused.value.reason) == (404, "not_found")


def test_token_refusals_say_why() -> None:
    issuer = TokenIssuer(b"k" * 32, issuer="mx.example.test", ttl=60)
    token = issuer.issue(agent=AGENT, thread_id="T1", decision_id="d1", capabilities=["read"], now=1000)
    assert verify_token(issuer, token, agent=AGENT, now=1010).thread_id == "T1"
    for given, now, agent, words in ((token, 2000, AGENT, "expired at 1970-01-01T00:17:40"),
                                     (token, 500, AGENT, "not valid yet"),
                                     (token[:-2], 1010, AGENT, "not genuine"),
                                     ("garbage", 1010, AGENT, "not genuine"),
                                     (TokenIssuer(b"o" * 32, issuer="mx.example.test", ttl=60).issue(
                                         agent=AGENT, thread_id="T1", decision_id="d1", capabilities=[], now=1000),
                                      1010, AGENT, "not genuine"),
                                     (token, 1010, OTHER_AGENT, "another agent"),
                                     ("", 1010, AGENT, "no capability token")):
        with pytest.raises(Refused) as refused:
            verify_token(issuer, given, agent=agent, now=now)
        assert (refused.value.status, refused.value.reason) == (401, "token_invalid")
        assert words in refused.value.detail


def test_the_secrets_guarded_are_every_key_the_appliance_holds(make_config: Callable[..., ApplianceConfig]) -> None:
    config = send_config(make_config)
    env = {"TEST_SEND_WHSEC": "whsec_dGhlLXdlYmhvb2stc2VjcmV0 whsec_b2xkLXNlY3JldC1yb3RhdGluZw==",
           "TEST_APPLIANCE_HOOK_SECRET": "hook-secret-value"}
    found = appliance_secrets(config, agent_keys={"key-1": AGENT, "key-2": OTHER_AGENT}, admin_token="admin-tok",
                              token_key=b"\x01" * 32, environ=env)
    assert {"key-1", "key-2", "admin-tok", "hook-secret-value", "whsec_dGhlLXdlYmhvb2stc2VjcmV0",
            "dGhlLXdlYmhvb2stc2VjcmV0", "b2xkLXNlY3JldC1yb3RhdGluZw=="} <= set(found)
    assert "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=" in found


def test_the_fingerprint_is_the_request_not_its_token_or_key_order() -> None:
    a = msgspec.json.decode(b'{"text": "t", "cc": ["b@x.test"], "capabilityToken": "one"}', type=SendRequest)
    b = msgspec.json.decode(b'{"cc": ["b@x.test"], "capabilityToken": "two", "text": "t"}', type=SendRequest)
    assert fingerprint("reply", "e1", a) == fingerprint("reply", "e1", b)
    assert fingerprint("reply", "e2", a) != fingerprint("reply", "e1", a)
    assert fingerprint("new", None, a) != fingerprint("reply", None, a)
    assert fingerprint("reply", "e1", msgspec.structs.replace(a, text="u")) != fingerprint("reply", "e1", a)


async def test_expired_blobs_and_keys_are_removed(runtime: Runtime) -> None:
    parent = await receive(runtime, mail())
    await outbox_of(runtime).submit(AGENT, "reply", parent.email_id, SendRequest(text="x"), parent.token, "old")
    removed = await outbox_of(runtime).expire(time.time() + 2 * 86_400)
    assert removed == (0, 1)
    assert await count(runtime, "SELECT count(*) FROM idempotency_keys") == 0


async def test_appliance_outbox_lists_and_shows_sent_mail(tmp_path: Path, make_config: Callable[..., ApplianceConfig],
                                                          send_env: None, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = send_config(make_config, POLICY)
    rt = Runtime(config)
    await rt.start()
    try:
        parent: Received = await receive(rt, mail())
        sent = await outbox_of(rt).submit(AGENT, "reply", parent.email_id, SendRequest(text="x", cc=["b@example.net"]),
                                          parent.token, None)
    finally:
        await rt.stop()
    (tmp_path / "p.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    path.write_text(f'mode = "stalwart"\ndata_dir = "var"\nhostname = "mx.example.test"\n[dns]\noffline = true\n'
                    f'[[agents]]\naddress = "{AGENT}"\npolicy = "p.toml"\n')
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    assert main(["outbox", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert sent.email_id in out and "queued" in out and "alice@example.net, b@example.net" in out
    assert main(["outbox", "show", sent.email_id, "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "alice@example.net: queued after 0 attempt(s)" in out and sent.message_id in out
    assert main(["outbox", "show", "e-none", "--config", str(path)]) == 1
    assert main(["outbox", "list", "--json", "--agent", OTHER_AGENT, "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "[]"
