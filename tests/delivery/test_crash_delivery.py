"""SIGKILL while a webhook attempt is in flight: after a restart the same delivery id is sent again."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import duckdb
from standardwebhooks.webhooks import Webhook

from tests.delivery.conftest import SECRET
from tests.delivery.receiver import Answer, WebhookReceiver
from tests.dnsserver import serve_zone
from tests.e2e.harness import ApplianceProcess, write_config

POLICY = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]
"""

MESSAGE = (b"From: alice@example.net\r\nTo: agent@example.test\r\nSubject: in flight\r\n"
           b"Message-ID: <in-flight@example.net>\r\n\r\nhello\r\n")


def test_sigkill_mid_delivery_resends_the_same_delivery_id(tmp_path: Path) -> None:
    hang_first = [True]

    def script(i: int, got: object) -> Answer:
        if hang_first[0]:
            return Answer(delay=5.0)  # the appliance is killed while it waits for this answer
        return Answer(status=204, body=b"")

    with serve_zone([("example.net", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")]) as dns, \
            WebhookReceiver(script) as receiver:
        config = write_config(tmp_path, policy=POLICY, nameservers=[dns.address], webhook_url=receiver.url)
        appliance = ApplianceProcess(config, env={"AGENT_WEBHOOK_SECRET": SECRET})
        with appliance:
            with smtplib.SMTP("127.0.0.1", appliance.smtp_port, timeout=10) as client:
                client.sendmail("alice@example.net", ["agent@example.test"], MESSAGE)
            [first] = receiver.wait_for(1, timeout=10)
            appliance.kill()
            hang_first[0] = False
            appliance.start()
            second = receiver.wait_for(2, timeout=10)[1]
            deadline = time.monotonic() + 10
            while True:
                status = _status(appliance, first.headers["webhook-id"])
                if status == "delivered" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert appliance.terminate() == 0
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    Webhook(SECRET).verify(second.body, second.headers)
    with duckdb.connect(str(tmp_path / "var" / "appliance.duckdb"), read_only=True) as con:
        row = con.execute("SELECT status, attempts FROM deliveries WHERE delivery_id = ?",
                          [first.headers["webhook-id"]]).fetchone()
    assert row == ("delivered", 1)


def _status(appliance: ApplianceProcess, delivery_id: str) -> str | None:
    import httpx

    answer = httpx.get(f"http://127.0.0.1:{appliance.http_port}/api/v1/deliveries/{delivery_id}",
                       headers={"Authorization": "Bearer admin-test-token"}, timeout=5)
    if answer.status_code != 200:
        return None
    status: str = answer.json()["delivery"]["status"]
    return status
