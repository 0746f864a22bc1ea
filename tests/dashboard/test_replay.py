"""The Replay page: the agent's recorded history judged again under a policy given in the form."""

from __future__ import annotations

import re

from tests.conftest import AGENT
from tests.dashboard.app import DashboardApp, csrf_of

LETS_HELD_IN = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
[[senders]]
match = { domain = "held.example" }
"""
"""The test policy, but held.example is let in rather than quarantined."""


def history(dashboard: DashboardApp) -> None:
    for n, sender in enumerate(["a@example.net", "h@held.example", "z@stranger.example"]):
        dashboard.offer(f"From: {sender}\r\nTo: {AGENT}\r\nSubject: r{n}\r\nMessage-ID: <r{n}@x>\r\n\r\nhi\r\n",
                        mail_from=sender, rcpt=AGENT)


def test_a_pasted_policy_is_replayed_and_the_held_message_would_now_be_accepted(dashboard: DashboardApp) -> None:
    history(dashboard)
    client, _ = dashboard.login()
    form = client.get("/ui/replay")
    assert form.status_code == 200 and f'<option value="{AGENT}"' in form.text
    ran = client.post("/ui/replay", files={"policy_file": ("", b"")}, data={
        "_csrf": csrf_of(form.text), "agent": AGENT, "since": "1h", "format": "toml", "policy_text": LETS_HELD_IN})
    assert ran.status_code == 200, ran.text
    assert "3 decision(s): 3 replayed, 2 unchanged, 1 changed" in ran.text
    flips = re.findall(r'<tr class="flip" data-kind="([^"]+)"', ran.text)
    assert flips == ["now_accepted"]


def test_an_uploaded_file_is_replayed_and_a_bad_policy_is_refused_with_the_field(dashboard: DashboardApp) -> None:
    history(dashboard)
    client, _ = dashboard.login()
    csrf = csrf_of(client.get("/ui/replay").text)
    uploaded = client.post("/ui/replay", files={"policy_file": ("candidate.toml", LETS_HELD_IN.encode())},
                           data={"_csrf": csrf, "agent": AGENT, "since": "1h"})
    assert uploaded.status_code == 200 and "under candidate.toml" in uploaded.text
    bad = client.post("/ui/replay", files={"policy_file": ("", b"")}, data={
        "_csrf": csrf, "agent": AGENT, "since": "1h", "format": "toml", "policy_text": 'defaultAction = "explode"'})
    assert bad.status_code == 400 and "defaultAction" in bad.text and 'id="replay-error"' in bad.text
    code = client.post("/ui/replay", files={"policy_file": ("", b"")}, data={
        "_csrf": csrf, "agent": AGENT, "since": "1h", "policy_path": "/etc/passwd.py"})
    assert code.status_code == 400 and "a Python policy is code" in code.text
    stranger = client.post("/ui/replay", files={"policy_file": ("", b"")}, data={
        "_csrf": csrf, "agent": "nobody@example.test", "since": "1h", "policy_text": LETS_HELD_IN})
    assert stranger.status_code == 400 and "is not an agent" in stranger.text
