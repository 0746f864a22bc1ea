"""The Deliveries page: failing and dead deliveries shown, retried now, replayed; an endpoint re-enabled.

The agent's webhook is a real HTTP receiver whose answers each test scripts; every action is
checked in the audit log with the dashboard session as its actor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.config import ApplianceConfig
from tests.conftest import AGENT, POLICY
from tests.dashboard.app import ADMIN_TOKEN, DashboardApp, serve_dashboard
from tests.dashboard.audit_log import events, sql
from tests.dashboard.browser.stack import WEBHOOK_SECRET, Switchboard
from tests.delivery.receiver import Answer, WebhookReceiver

LATER = {"retry-after": "3600"}
"""A failed answer that puts the next attempt an hour away (Retry-After is honoured)."""
FAILING_TWICE = (Answer(status=500), Answer(status=500))
"""Attempts 1 (at once) and 2 (5 s later) fail: attempt 3 is 5 minutes away, so "retry now" is what sends it.
(Not Retry-After: it pauses the whole endpoint in the dispatcher, and a retry waits for the pause too.)"""


@pytest.fixture
def switchboard() -> Switchboard:
    return Switchboard()


@pytest.fixture
def receiver(switchboard: Switchboard) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(switchboard) as running:
        yield running


@pytest.fixture
def hooked(make_config: Callable[..., ApplianceConfig], tmp_path: Path, receiver: WebhookReceiver,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[DashboardApp]:
    """The dashboard's appliance with AGENT's webhook pointing at ``receiver``."""
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("TEST_AGENT_WEBHOOK_SECRET", WEBHOOK_SECRET)
    (tmp_path / "hooked-policy.toml").write_text(POLICY)
    agents = [{"address": AGENT, "policy": "hooked-policy.toml", "webhook_url": receiver.url,
               "webhook_secret_env": "TEST_AGENT_WEBHOOK_SECRET"}]
    with serve_dashboard(make_config(mode="sandbox", agents=agents)) as app:
        yield app


def accept(app: DashboardApp, n: int) -> None:
    app.send(f"From: a{n}@example.net\r\nTo: {AGENT}\r\nSubject: hello {n}\r\nMessage-ID: <d-{n}@x>\r\n\r\nhi\r\n",
             mail_from=f"a{n}@example.net", rcpt=AGENT)


def rows(html: str) -> dict[str, str]:
    """delivery id -> status, as the page's table lists them."""
    return dict(re.findall(r'<tr class="delivery" data-delivery-id="([^"]+)" data-status="([^"]+)"', html))


def status_of(app: DashboardApp, delivery_id: str) -> str:
    return str(sql(app, f"SELECT status FROM deliveries WHERE delivery_id = '{delivery_id}'")[0][0])


def test_a_failing_delivery_needs_attention_and_retry_now_delivers_it_and_is_audited(
        hooked: DashboardApp, receiver: WebhookReceiver, switchboard: Switchboard) -> None:
    switchboard.answer_next(*FAILING_TWICE)
    accept(hooked, 1)
    receiver.wait_for(2, timeout=15)
    client, csrf = hooked.login()
    delivery_id = str(sql(hooked, "SELECT delivery_id FROM deliveries")[0][0])
    for _ in range(200):  # the second attempt is recorded just after the receiver answered
        if sql(hooked, "SELECT attempts FROM deliveries")[0][0] == 2:
            break
    assert rows(client.get("/ui/deliveries").text) == {delivery_id: "pending"}
    page = client.get(f"/ui/deliveries/{delivery_id}")
    assert page.status_code == 200 and "HTTP 500" in page.text and f'id="retry-{delivery_id}"' in page.text
    retried = client.post(f"/ui/deliveries/{delivery_id}/retry?back=delivery", data={"_csrf": csrf})
    assert retried.status_code == 303 and retried.headers["location"].startswith(f"/ui/deliveries/{delivery_id}?")
    assert "attempted now" in client.get(retried.headers["location"]).text
    receiver.wait_for(3)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id] * 3
    audited = events(hooked, "delivery.retried")
    assert len(audited) == 1 and "retried now by admin via dashboard session" in audited[0][1]


def test_a_410_fails_the_delivery_and_disables_the_endpoint_enable_then_replay_delivers_it(
        hooked: DashboardApp, receiver: WebhookReceiver, switchboard: Switchboard) -> None:
    switchboard.answer_next(Answer(status=410))
    accept(hooked, 1)
    receiver.wait_for(1)
    client, csrf = hooked.login()
    for _ in range(200):
        listed = rows(client.get("/ui/deliveries").text)
        if listed.get(next(iter(listed), ""), "") == "failed":
            break
    [(delivery_id, status)] = listed.items()
    assert status == "failed"
    listing = client.get("/ui/deliveries").text
    assert f'id="enable-{AGENT}"' in listing and f'id="replay-{delivery_id}"' in listing
    replayed = client.post(f"/ui/deliveries/{delivery_id}/replay", data={"_csrf": csrf})
    assert "its endpoint is disabled" in client.get(replayed.headers["location"]).text
    enabled = client.post(f"/ui/endpoints/{AGENT}/enable", data={"_csrf": csrf})
    assert "enabled again" in client.get(enabled.headers["location"]).text
    receiver.wait_for(2)
    assert receiver.requests[1].headers["webhook-id"] == delivery_id
    assert "replayed by admin via dashboard session" in events(hooked, "delivery.replayed")[0][1]
    assert "re-enabled by admin via dashboard session" in events(hooked, "endpoint.enabled")[0][1]


def test_replaying_a_pending_delivery_is_refused_with_the_reason(
        hooked: DashboardApp, receiver: WebhookReceiver, switchboard: Switchboard) -> None:
    switchboard.answer_next(Answer(status=503, headers=LATER))
    accept(hooked, 1)
    receiver.wait_for(1)
    client, csrf = hooked.login()
    delivery_id = str(sql(hooked, "SELECT delivery_id FROM deliveries")[0][0])
    refused = client.post(f"/ui/deliveries/{delivery_id}/replay?back=delivery", data={"_csrf": csrf})
    assert "only dead or failed ones are replayed" in client.get(refused.headers["location"]).text
    assert events(hooked, "delivery.replayed") == []


def test_the_views_filter_by_status_and_an_unknown_delivery_is_404(
        hooked: DashboardApp, receiver: WebhookReceiver) -> None:
    accept(hooked, 1)
    receiver.wait_for(1)
    client, _ = hooked.login()
    delivery_id = str(sql(hooked, "SELECT delivery_id FROM deliveries")[0][0])
    for _ in range(200):
        if status_of(hooked, delivery_id) == "delivered":
            break
    assert rows(client.get("/ui/deliveries").text) == {}  # nothing needs attention
    assert rows(client.get("/ui/deliveries?status=delivered").text) == {delivery_id: "delivered"}
    assert client.get("/ui/deliveries?status=bogus").status_code == 400
    assert client.get("/ui/deliveries/nope").status_code == 404
