"""The event stream over a real HTTP connection: same payloads and ids, resumable without gaps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import msgspec
import pytest

from appliance.config import ApplianceConfig
from appliance.delivery.jobs import enqueue, release_held
from appliance.sdk import MessageReceived, parse_event
from tests.api.server import Served, serve
from tests.conftest import AGENT, OTHER_AGENT
from tests.delivery.conftest import message

KEY = {"Authorization": "Bearer stream-agent-key"}


@dataclass
class Sse:
    id: str | None
    event: str | None
    data: str


class SseReader:
    """Server-sent events (comments skipped) from one streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()

    def read(self, count: int) -> list[Sse]:
        out: list[Sse] = []
        fields: dict[str, list[str]] = {}  # name -> values
        for line in self._lines:
            if line == "":
                if "data" in fields and fields["data"] != [""]:
                    out.append(Sse(id=fields["id"][-1] if "id" in fields else None,
                                   event=fields["event"][-1] if "event" in fields else None,
                                   data="\n".join(fields["data"])))
                    if len(out) == count:
                        return out
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
        raise AssertionError(f"stream ended after {len(out)} event(s)")


def read_events(response: httpx.Response, count: int) -> list[Sse]:
    return SseReader(response).read(count)


@pytest.fixture
def served(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("TEST_STREAM_AGENT_KEY", "stream-agent-key")
    monkeypatch.setenv("TEST_STREAM_OTHER_KEY", "stream-other-key")
    config = make_config()
    agents = [msgspec.structs.replace(a, api_key_env=env)
              for a, env in zip(config.agents, ["TEST_STREAM_AGENT_KEY", "TEST_STREAM_OTHER_KEY"], strict=True)]
    with serve(msgspec.structs.replace(config, agents=agents)) as app:
        yield app


def add(served: Served, n: int, agent: str = AGENT, status: str = "pending") -> str:
    data = message(n, agent)
    delivery_id = served.runtime.db.write_sync(lambda con: enqueue(
        con, agent=agent, event_type="message.received", data=data, email_id=data.email_id,
        decision_id=data.decision_id, now=time.time(), status=status))
    served.runtime.wake_dispatcher()
    return delivery_id


def test_stream_needs_the_agent_key(served: Served) -> None:
    assert httpx.get(f"{served.url}/api/v1/events", timeout=5).status_code == 401
    assert httpx.get(f"{served.url}/api/v1/events", headers={"Authorization": "Bearer nope"},
                     timeout=5).status_code == 401


def test_stream_resumes_after_a_disconnect_without_gaps(served: Served) -> None:
    first = [add(served, n) for n in range(3)]
    with httpx.Client(base_url=served.url, headers=KEY, timeout=10) as client:
        with client.stream("GET", "/api/v1/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = read_events(response, 3)
        assert [e.id for e in events] == first
        event = parse_event(events[0].data)
        assert events[0].event == "message.received" and isinstance(event, MessageReceived)
        assert event.data.email_id == "e0000" and event.data.capability_token

        held = add(served, 10, status="held")
        add(served, 11, agent=OTHER_AGENT)
        later = [add(served, n) for n in range(3, 6)]
        with client.stream("GET", "/api/v1/events", headers={"Last-Event-ID": first[-1]}) as response:
            assert [e.id for e in read_events(response, 3)] == later

        served.runtime.db.write_sync(lambda con: release_held(con, "e0010", time.time()))
        with client.stream("GET", "/api/v1/events", params={"lastEventId": later[-1]}) as response:
            assert [e.id for e in read_events(response, 1)] == [held]


def test_stream_is_live_and_numeric_cursors_work(served: Served) -> None:
    add(served, 1)
    with httpx.Client(base_url=served.url, headers=KEY, timeout=10) as client, \
            client.stream("GET", "/api/v1/events", headers={"Last-Event-ID": "0"}) as response:
        reader = SseReader(response)
        [old] = reader.read(1)
        started = time.monotonic()
        new = add(served, 2)
        [live] = reader.read(1)
    assert live.id == new and old.id != new
    assert time.monotonic() - started < 1.0, "a committed delivery is streamed at once, not polled"


def test_each_agent_streams_only_its_own_events(served: Served) -> None:
    add(served, 1, agent=AGENT)
    theirs = add(served, 2, agent=OTHER_AGENT)
    with httpx.Client(base_url=served.url, headers={"Authorization": "Bearer stream-other-key"},
                      timeout=10) as client, client.stream("GET", "/api/v1/events") as response:
        assert [e.id for e in read_events(response, 1)] == [theirs]


def test_shutdown_ends_open_streams_so_the_server_can_stop(served: Served) -> None:
    add(served, 1)
    with httpx.Client(base_url=served.url, headers=KEY, timeout=10) as client, \
            client.stream("GET", "/api/v1/events") as response:
        reader = SseReader(response)
        reader.read(1)
        started = time.monotonic()
        served.runtime.begin_shutdown()
        with pytest.raises(AssertionError, match="stream ended"):
            reader.read(1)
    assert time.monotonic() - started < 1.0
