"""Stalwart mode end to end, with the stand-in as a local ``stalwart`` binary the appliance supervises.

``appliance run`` (a real subprocess) starts the stand-in, bootstraps and configures it over management
JMAP, answers its MTA hook, follows the agent's account by push and sends the agent's reply through
``EmailSubmission``. Real SMTP into the stand-in, a real webhook receiver, a real loopback DNS server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.delivery.receiver import WebhookReceiver
from tests.dnsserver import DnsTestServer
from tests.stalwart.stack import AGENT, SENDER_ZONE, Stack, send


@pytest.fixture
def dns() -> Iterator[DnsTestServer]:
    with DnsTestServer(SENDER_ZONE) as server:
        yield server


def test_mail_in_through_the_hook_and_push_to_the_webhook_and_the_reply_out_through_stalwart(
        tmp_path: Path, dns: DnsTestServer) -> None:
    with WebhookReceiver() as receiver:
        stack = Stack(tmp_path, dns, receiver.url)
        with stack.running():
            # configured: the hook is ours, on the rcpt and data stages, and nothing was shaped wrong
            hooks = [h for h in stack.standin("/_standin/state")["hooks"].values()]
            assert [(h["url"], h["stages"], h["tempFailOnError"]) for h in hooks] == [
                (f"http://127.0.0.1:{stack.http_port}/hooks/mta", {"rcpt": True, "data": True}, True)]
            assert stack.standin("/_standin/violations") == []
            # the domain's manifest publishes Stalwart's own DKIM keys beside the outbox's
            admin = {"Authorization": "Bearer admin-test-token"}
            api = f"http://127.0.0.1:{stack.http_port}/api/v1/domains"
            assert httpx.post(api, json={"domain": "example.test"}, headers=admin, timeout=10).status_code == 201
            deadline = time.monotonic() + 10
            while len(stack.standin("/_standin/state")["dkim"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # Stalwart makes a new domain's keys asynchronously
            stalwarts = [o["selector"] for o in stack.standin("/_standin/state")["dkim"].values()]
            manifest = httpx.get(f"{api}/example.test/manifest?format=json", headers=admin, timeout=10).json()
            selectors = {r["name"].split("._domainkey")[0] for r in manifest["records"] if "._domainkey" in r["name"]}
            assert len(stalwarts) == 2 and set(stalwarts) < selectors and len(selectors) == 4

            send(stack.stalwart_smtp)
            got = receiver.wait_for(1, timeout=20)[0]
            event = json.loads(got.body)
            assert event["type"] == "message.received"
            data = event["data"]
            assert data["from"] == "alice@example.net" and data["auth"]["spf"] == "pass"

            reply = httpx.post(f"http://127.0.0.1:{stack.http_port}/api/v1/messages/{data['emailId']}/reply",
                               json={"text": "Noon works."},
                               headers={"Authorization": "Bearer agent-test-key",
                                        "X-Capability-Token": data["capabilityToken"]}, timeout=10)
            assert reply.status_code == 202, reply.text
            deadline = time.monotonic() + 20
            while not stack.standin("/_standin/outbox") and time.monotonic() < deadline:
                time.sleep(0.1)
            out = stack.standin("/_standin/outbox")
            assert [m["to"] for m in out] == [["alice@example.net"]]
            assert "Noon works." in out[0]["raw"]
            # the submission met the hook as the agent, and the outbound policy let it go
            calls = stack.standin("/_standin/hook-calls")
            submitted = [c for c in calls if (c["request"]["context"].get("sasl") or {}).get("login") == AGENT
                         and c["request"]["context"]["stage"] == "data"]
            assert [c["response"]["action"] for c in submitted] == ["accept"]
            events = [json.loads(r.body)["type"] for r in receiver.wait_for(2, timeout=20)]
        assert events == ["message.received", "message.sent"]  # dispatched once; the reply reported sent


def test_after_a_restart_the_appliance_resumes_from_the_saved_state_and_sends_nothing_twice(
        tmp_path: Path, dns: DnsTestServer) -> None:
    with WebhookReceiver() as receiver:
        stack = Stack(tmp_path, dns, receiver.url)
        with stack.running():
            send(stack.stalwart_smtp, "first")
            receiver.wait_for(1, timeout=20)
        # The stand-in is the appliance's child and stopped with it (gracefully); started again, the
        # follower resumes from the state it saved: the first message is not dispatched again.
        with stack.running():
            send(stack.stalwart_smtp, "second")
            receiver.wait_for(2, timeout=20)
            time.sleep(1.0)  # anything dispatched twice would have arrived by now
        subjects = sorted(json.loads(r.body)["data"]["subject"] for r in receiver.requests)
        assert subjects == ["first", "second"]
        with stack.db() as con:
            states = con.execute("SELECT status FROM deliveries WHERE event_type = 'message.received'").fetchall()
        assert states == [("delivered",), ("delivered",)]


def test_a_second_run_changes_nothing_in_stalwart(tmp_path: Path, dns: DnsTestServer) -> None:
    with WebhookReceiver() as receiver:
        stack = Stack(tmp_path, dns, receiver.url)
        with stack.running():
            first = [c["method"] for c in stack.standin("/_standin/requests") if c["method"].endswith("/set")]
        log_before = stack.appliance.log.read_text()
        with stack.running():
            again = [c["method"] for c in stack.standin("/_standin/requests") if c["method"].endswith("/set")]
        assert "bootstrap done" in log_before  # a new Stalwart: bootstrapped, restarted, then configured
        assert {"x:Domain/set", "x:Account/set", "x:ApiKey/set", "x:MtaHook/set", "x:Action/set"} <= set(first)
        assert again == []  # the second run read what is there and wrote nothing
        assert "(0 change(s))" in stack.appliance.log.read_text()[len(log_before):]
