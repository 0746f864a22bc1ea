"""EventSource push (RFC 8620 7.3) over a real HTTP connection: StateChange within a second of new mail."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from appliance.config import ApplianceConfig
from tests.api.server import Served, serve
from tests.api.test_events import SseReader
from tests.conftest import AGENT
from tests.e2e.harness import free_port
from tests.jmap.conftest import ACCOUNT, MINE, OTHER_ACCOUNT, THEIRS, USING, jmap_config, message


@pytest.fixture
def served(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    port = free_port()
    config = jmap_config(make_config, monkeypatch, mode="sandbox", smtp={"listen": f"127.0.0.1:{port}"})
    with serve(config) as app:
        app.smtp_port = port  # type: ignore[attr-defined]
        yield app


def smtp_send(served: Served, raw: bytes, sender: str = "alice@example.net") -> None:
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=10) as smtp:  # type: ignore[attr-defined]
        smtp.sendmail(sender, [AGENT], raw)


def api(served: Served, calls: list[list[Any]], headers: dict[str, str] = MINE) -> list[Any]:
    response = httpx.post(f"{served.url}/api/v1/jmap", json={"using": USING, "methodCalls": calls},
                          headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    answers: list[Any] = response.json()["methodResponses"]
    return answers


def states(served: Served) -> dict[str, str]:
    answers = api(served, [["Email/get", {"accountId": ACCOUNT, "ids": []}, "a"],
                           ["Mailbox/get", {"accountId": ACCOUNT, "ids": []}, "b"],
                           ["Thread/get", {"accountId": ACCOUNT, "ids": []}, "c"]])
    return {"Email": answers[0][1]["state"], "Mailbox": answers[1][1]["state"], "Thread": answers[2][1]["state"]}


def test_a_state_change_within_a_second_of_accepted_mail(served: Served) -> None:
    before = states(served)
    url = f"{served.url}/api/v1/jmap/eventsource?types=*&closeafter=no&ping=0"
    with httpx.stream("GET", url, headers=MINE, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SseReader(response)
        time.sleep(0.3)  # the stream is open
        sent = time.monotonic()
        smtp_send(served, message(subject="push me"))
        accepted = time.monotonic()
        event = reader.read(1)[0]
        latency = time.monotonic() - accepted
        assert event.event == "state" and event.id is not None
        change = json.loads(event.data)
        assert change["@type"] == "StateChange"
        assert set(change["changed"]) == {ACCOUNT}
        changed = change["changed"][ACCOUNT]
        assert {"Email", "Mailbox", "Thread", "EmailDelivery"} <= set(changed)
        assert latency < 1.0, f"StateChange {latency:.3f} s after the 250 (SMTP took {accepted - sent:.3f} s)"
        after = states(served)
        assert {t: changed[t] for t in after} == after and after != before
        email_id = api(served, [["Email/query", {"accountId": ACCOUNT}, "q"]])[0][1]["ids"][0]
        started = time.monotonic()
        api(served, [["Email/set", {"accountId": ACCOUNT, "update": {email_id: {"keywords/$seen": True}}}, "s"]])
        event = reader.read(1)[0]
        assert time.monotonic() - started < 1.0
        changed = json.loads(event.data)["changed"][ACCOUNT]
        assert set(changed) == {"Email", "Mailbox"}  # a keyword: the email and its mailbox's counts


def test_types_closeafter_ping_and_scoping(served: Served) -> None:
    url = f"{served.url}/api/v1/jmap/eventsource?types=Mailbox&closeafter=state&ping=1"
    results: dict[str, Any] = {}

    def other_stream() -> None:
        theirs = f"{served.url}/api/v1/jmap/eventsource?types=*&closeafter=state&ping=0"
        with httpx.stream("GET", theirs, headers=THEIRS, timeout=3) as response:
            try:
                results["theirs"] = SseReader(response).read(1)
            except (httpx.ReadTimeout, AssertionError) as exc:
                results["theirs"] = exc

    watcher = threading.Thread(target=other_stream)
    watcher.start()
    with httpx.stream("GET", url, headers=MINE, timeout=10) as response:
        lines = response.iter_lines()
        events: list[tuple[str, str]] = []
        current: dict[str, str] = {}
        sent = False
        for line in lines:
            if line.startswith(":"):
                continue
            if line == "":
                if current:
                    events.append((current.get("event", ""), current.get("data", "")))
                current = {}
                if events and events[-1][0] == "ping" and not sent:
                    smtp_send(served, message(subject="for the mailbox"))
                    sent = True
                continue
            name, _, value = line.partition(":")
            current[name] = value.strip()
        # the stream closed itself after its first state event (closeafter=state)
    pings = [d for e, d in events if e == "ping"]
    assert pings and json.loads(pings[0]) == {"interval": 1}
    state_events = [json.loads(d) for e, d in events if e == "state"]
    assert len(state_events) == 1 and list(state_events[0]["changed"][ACCOUNT]) == ["Mailbox"]
    watcher.join(10)
    assert isinstance(results["theirs"], Exception)  # the other agent heard nothing of this mail
    assert OTHER_ACCOUNT not in json.dumps(state_events)


def test_reconnecting_with_last_event_id_catches_up(served: Served) -> None:
    url = f"{served.url}/api/v1/jmap/eventsource?types=Email&closeafter=state&ping=0"
    with httpx.stream("GET", url, headers=MINE, timeout=10) as response:
        reader = SseReader(response)
        time.sleep(0.3)
        smtp_send(served, message(subject="one"))
        first = reader.read(1)[0]
    smtp_send(served, message(subject="two"))
    time.sleep(0.6)  # changed while nobody listened
    with httpx.stream("GET", url, headers={**MINE, "Last-Event-ID": str(first.id)}, timeout=10) as response:
        again = SseReader(response).read(1)[0]
    assert json.loads(again.data)["changed"][ACCOUNT]["Email"] == states(served)["Email"]
    assert httpx.get(f"{served.url}/api/v1/jmap/eventsource?types=Nope", headers=MINE).status_code == 400
    assert httpx.get(f"{served.url}/api/v1/jmap/eventsource?ping=x", headers=MINE).status_code == 400
    assert httpx.get(f"{served.url}/api/v1/jmap/eventsource").status_code == 401
