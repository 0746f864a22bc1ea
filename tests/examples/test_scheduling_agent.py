"""The scheduling agent's parts on their own: the calendar service, the planner, the Claude wiring.

The planner and the Claude wiring talk to the SDK through its ``Client``'s methods;
here a recorder stands in for the client and calls a real ``Calendar`` the way the
appliance would (the tool's thread from the token). The whole loop, through the
appliance, is tests/e2e/test_scheduling_agent.py.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from appliance.sdk import CapabilityMissing, IdempotencyConflict, MessageData, NotFound, ToolInfo
from examples.scheduling_agent import calendar_service
from examples.scheduling_agent.calendar_service import Calendar, Entry, demo_bookings, parse_time
from examples.scheduling_agent.claude import FALLBACK_CATALOG, ClaudePlanner, granted_tools
from examples.scheduling_agent.planner import TOOL_CAPABILITY, Planner, asked_day, asked_minutes, describe
from tests.delivery.conftest import message

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "scheduling_agent"
THURSDAY = date(2026, 11, 26)
BOSS = ["read_calendar", "propose_meeting", "confirm_meeting"]


def at(text: str) -> datetime:
    return parse_time(text, "test")


def calendar() -> Calendar:
    return Calendar([Entry(id="standup", start=at("2026-11-26T09:00:00Z"), end=at("2026-11-26T09:30:00Z"),
                           title="Stand-up"),
                     Entry(id="review", start=at("2026-11-26T09:30:00Z"), end=at("2026-11-26T10:00:00Z"),
                           title="Review")])


def mail(text: str, *, thread: str = "T1", n: int = 1, capabilities: list[str] | None = None,
         subject: str = "Q4 plan", sender: str = "boss@acme.com") -> MessageData:
    return msgspec.structs.replace(message(n), thread_id=thread, text=text, subject=subject, sender=sender,
                                   received_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),  # a Monday
                                   capabilities=BOSS if capabilities is None else capabilities,
                                   capability_token=f"token-{thread}-{n}")


@dataclass
class Sent:
    email_id: str
    text: str
    key: str | None


class Appliance:
    """Stands in for the SDK client: enforces the grant as the appliance does, and calls the calendar."""

    def __init__(self, cal: Calendar) -> None:
        self.calendar = cal
        self.replies: list[Sent] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.grants: dict[str, tuple[str, list[str]]] = {}
        self.usage: list[tuple[str, int]] = []

    def grant(self, data: MessageData) -> MessageData:
        self.grants[data.capability_token] = (data.thread_id, data.capabilities)
        return data

    def tools(self) -> list[ToolInfo]:
        raise NotFound(404, "not_found", "this appliance lists no tools")

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *, capability_token: str) -> Any:
        thread, granted = self.grants[capability_token]
        if TOOL_CAPABILITY[name] not in granted:
            raise CapabilityMissing(403, "capability_missing", TOOL_CAPABILITY[name])
        self.calls.append((name, dict(arguments or {})))
        route = {"calendar_availability": self.calendar.availability, "propose_meeting": self.calendar.propose,
                 "confirm_meeting": self.calendar.confirm}[name]
        return route(dict(arguments or {}), thread)

    def reply(self, data: MessageData, text: str, *, idempotency_key: str | None = None) -> Any:
        if any(r.key == idempotency_key and r.text != text for r in self.replies):
            raise IdempotencyConflict(422, "idempotency_conflict", "another request")
        self.replies.append(Sent(data.email_id, text, idempotency_key))

    def report_usage(self, thread_id: str, tokens: int) -> Any:
        self.usage.append((thread_id, tokens))


@pytest.fixture
def appliance() -> Appliance:
    return Appliance(calendar())


# -- the calendar service -----------------------------------------------------------------------

def test_free_slots_skip_bookings_other_threads_holds_and_weekends() -> None:
    cal = calendar()
    assert cal.propose({"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:30:00Z", "title": "A"}, "T-other") \
        ["status"] == "held"
    free = cal.availability({"from": "2026-11-26", "limit": 2}, "T1")
    assert free["slots"] == [{"start": "2026-11-26T10:30:00Z", "end": "2026-11-26T11:00:00Z"},
                             {"start": "2026-11-26T11:00:00Z", "end": "2026-11-26T11:30:00Z"}]
    assert [b["title"] for b in free["busy"]] == ["Stand-up", "Review", "A"]
    assert cal.availability({"from": "2026-11-26", "limit": 1}, "T-other")["slots"][0]["start"] == \
        "2026-11-26T10:00:00Z"  # a thread's own hold is free to it
    assert cal.availability({"from": "2026-11-28", "days": 2}, "T1")["slots"] == []  # Saturday, Sunday


def test_a_hold_is_booked_once_and_conflicts_are_answered_not_booked() -> None:
    cal = calendar()
    slot = {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T11:00:00Z", "title": "Plan"}
    assert cal.propose({**slot, "start": "2026-11-26T09:00:00Z"}, "T1")["status"] == "conflict"
    assert cal.propose(slot, "T1")["status"] == "held"
    assert cal.propose(slot, "T2")["status"] == "conflict"
    booked = cal.confirm({}, "T1")
    assert (booked["status"], booked["booking"]["start"], booked["booking"]["thread"]) == \
        ("booked", "2026-11-26T10:00:00Z", "T1")
    assert cal.confirm({}, "T1")["status"] == "nothing_to_confirm"
    assert cal.confirm(slot, "T2")["status"] == "conflict"
    assert [b["title"] for b in cal.listing()["bookings"]] == ["Stand-up", "Review", "Plan"]


def test_the_service_speaks_json_over_http_and_refuses_nonsense() -> None:
    cal = calendar()
    server = calendar_service.serve(cal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        headers = {"x-appliance-thread": "T9"}
        held = httpx.post(f"{url}/propose", json={"start": "2026-11-27T09:00:00Z", "end": "2026-11-27T09:30:00Z",
                                                  "title": "x"}, headers=headers)
        assert (held.status_code, held.json()["hold"]["thread"]) == (200, "T9")
        assert httpx.post(f"{url}/confirm", json={}, headers=headers).json()["status"] == "booked"
        bad = httpx.post(f"{url}/availability", json={"from": "someday"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")
        assert httpx.post(f"{url}/propose", json={"start": "2026-11-27T09:00:00Z", "end": "2026-11-27T08:00:00Z"},
                          headers=headers).status_code == 400
        assert httpx.post(f"{url}/delete-everything", json={}).status_code == 404
        assert [c["path"] for c in httpx.get(f"{url}/calls").json()["calls"]] == \
            ["/propose", "/confirm", "/availability", "/propose"]
        assert len(httpx.get(f"{url}/bookings").json()["bookings"]) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_the_demo_fortnight_has_stand_ups_on_weekdays_and_board_reviews_on_thursdays() -> None:
    entries = demo_bookings(date(2026, 11, 23))
    assert {e.start.weekday() for e in entries} == {0, 1, 2, 3, 4}
    assert sum(e.title == "Board review" for e in entries) == 2


# -- the planner ------------------------------------------------------------------------------

def test_asked_day_and_length() -> None:
    monday = date(2026, 11, 23)
    assert asked_day("Can we meet on Thursday?", monday) == THURSDAY
    assert asked_day("monday works", monday) == date(2026, 11, 30)  # the next one, not today
    assert asked_day("tomorrow?", monday) == date(2026, 11, 24)
    assert asked_day("on 2026-12-01 please", monday) == date(2026, 12, 1)
    assert asked_day("whenever", monday) == date(2026, 11, 24)
    assert [asked_minutes(t) for t in ("45 minutes", "an hour", "half an hour", "2 hours", "a chat")] == \
        [45, 60, 30, 120, 30]


def test_the_boss_asks_confirms_and_the_meeting_is_booked(appliance: Appliance) -> None:
    planner = Planner(appliance, log=lambda line: None)
    planner.handle(appliance.grant(mail("Can we meet on Thursday for 30 minutes to go over the Q4 plan?")))
    assert [name for name, _ in appliance.calls] == ["calendar_availability", "propose_meeting"]
    assert appliance.calls[0][1] == {"from": "2026-11-26", "days": 7, "durationMinutes": 30, "limit": 10}
    (proposal,) = appliance.replies
    assert proposal.text.startswith("How about Thursday 26 November, 10:00-10:30 UTC for 'Q4 plan'?")
    assert proposal.key == "reply-e0001"
    assert appliance.calendar.holds["T1"].start == at("2026-11-26T10:00:00Z")

    planner.handle(appliance.grant(mail("Yes, that works. Please book it.", n=2)))
    assert appliance.calls[-1] == ("confirm_meeting", {"start": "2026-11-26T10:00:00Z",
                                                       "end": "2026-11-26T10:30:00Z", "title": "Q4 plan"})
    assert appliance.replies[-1].text == "Booked: 'Q4 plan', Thursday 26 November, 10:00-10:30 UTC. See you then."
    assert [(b["title"], b["start"]) for b in appliance.calendar.listing()["bookings"]][-1] == \
        ("Q4 plan", "2026-11-26T10:00:00Z")
    assert appliance.calendar.holds == {}


def test_another_time_proposes_the_next_free_slot(appliance: Appliance) -> None:
    planner = Planner(appliance, log=lambda line: None)
    planner.handle(appliance.grant(mail("Could we have a call on Thursday?")))
    planner.handle(appliance.grant(mail("That doesn't work, another time please", n=2)))
    assert appliance.replies[-1].text.startswith("How about Thursday 26 November, 10:30-11:00 UTC")
    assert appliance.calendar.holds["T1"].start == at("2026-11-26T10:30:00Z")


def test_a_yes_after_a_restart_books_the_calendars_hold(appliance: Appliance) -> None:
    Planner(appliance, log=lambda line: None).handle(appliance.grant(mail("Meeting on Thursday?")))
    Planner(appliance, log=lambda line: None).handle(appliance.grant(mail("yes", n=2)))  # a fresh process
    assert appliance.calls[-1] == ("confirm_meeting", {})
    assert appliance.replies[-1].text.startswith("Booked: 'Q4 plan', Thursday 26 November, 10:00-10:30 UTC")


def test_a_sender_who_may_not_book_is_told_so_and_nothing_is_booked(appliance: Appliance) -> None:
    planner = Planner(appliance, log=lambda line: None)
    planner.handle(appliance.grant(mail("Meet Thursday?", capabilities=["read_calendar", "propose_meeting"])))
    assert "I may not book it myself" in appliance.replies[-1].text
    planner.handle(appliance.grant(mail("yes", n=2, capabilities=["read_calendar", "propose_meeting"])))
    assert appliance.replies[-1].text == "I'm sorry: I may not book meetings for you."
    assert "confirm_meeting" not in [name for name, _ in appliance.calls]


def test_a_conflict_notice_only_reads_the_calendar_and_gets_no_reply(appliance: Appliance) -> None:
    lines: list[str] = []
    planner = Planner(appliance, log=lines.append)
    notice = mail("Conflict: Thursday's review overlaps the offsite. Please move the meeting.",
                  sender="notices@calendar-bot.internal", capabilities=["read_calendar"], thread="T-bot")
    planner.handle(appliance.grant(notice))
    assert [name for name, _ in appliance.calls] == ["calendar_availability"]
    assert appliance.replies == []
    assert "nothing changed (granted: read_calendar)" in lines[-1]


def test_a_redelivered_message_is_not_answered_twice(appliance: Appliance) -> None:
    lines: list[str] = []
    planner = Planner(appliance, log=lines.append)
    first = appliance.grant(mail("Meet Thursday?"))
    planner.handle(first)
    planner.proposals.clear()  # as if the process had restarted, and the same event came again
    planner.handle(first)
    assert {(r.key, r.text) for r in appliance.replies} == {("reply-e0001", appliance.replies[0].text)}
    appliance.calendar.bookings.append(Entry(id="x", start=at("2026-11-26T10:00:00Z"),
                                             end=at("2026-11-26T11:00:00Z"), title="Taken"))
    planner.proposals.clear()
    planner.handle(first)  # 10:00 is gone: another text under the same key, which the appliance refuses
    assert lines[-1] == "[agent]   already replied to e0001"


def test_describe_names_the_sender_thread_auth_and_grant() -> None:
    line = describe(mail("hi"))
    assert line.startswith("[agent] mail from boss@acme.com ('Q4 plan'), thread T1, auth spf=pass dkim=pass")
    assert line.endswith("may: read_calendar, propose_meeting, confirm_meeting")


# -- the Claude wiring, with a stand-in for claude_agent_sdk ----------------------------------

@dataclass
class FakeTool:
    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Any


@pytest.fixture
def fake_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A ``claude_agent_sdk`` whose ``query`` plays a model: it reads the calendar, then replies."""
    seen: dict[str, Any] = {}
    sdk = types.ModuleType("claude_agent_sdk")

    class ClaudeAgentOptions:
        def __init__(self, **kwargs: Any) -> None:
            self.__dict__.update(kwargs)

    class ResultMessage:
        def __init__(self, usage: dict[str, int]) -> None:
            self.usage = usage

    def tool(name: str, description: str, schema: dict[str, Any]) -> Any:
        return lambda handler: FakeTool(name, description, schema, handler)

    def create_sdk_mcp_server(name: str, version: str, tools: list[FakeTool]) -> dict[str, Any]:
        return {"type": "sdk", "name": name, "tools": tools}

    async def query(*, prompt: str, options: Any) -> Any:
        seen["prompt"], seen["options"] = prompt, options
        tools = {t.name: t for t in options.mcp_servers["mail"]["tools"]}
        seen["read"] = await tools["calendar_availability"].handler({"from": "2026-11-26", "limit": 1})
        if "confirm_meeting" in tools:
            seen["confirm"] = await tools["confirm_meeting"].handler({})
        seen["reply"] = await tools["reply"].handler({"text": "Thursday 10:00?"})
        seen["again"] = await tools["reply"].handler({"text": "twice"})
        yield ResultMessage({"input_tokens": 900, "output_tokens": 100, "cache_read_input_tokens": 20})

    sdk.__dict__.update(ClaudeAgentOptions=ClaudeAgentOptions, ResultMessage=ResultMessage, tool=tool,
                        create_sdk_mcp_server=create_sdk_mcp_server, query=query)
    monkeypatch.setitem(sys.modules, "claude_agent_sdk", sdk)
    yield seen


def test_only_the_granted_tools_are_offered() -> None:
    assert [t.name for t in granted_tools(FALLBACK_CATALOG, ["read_calendar"])] == ["calendar_availability"]
    assert [t.name for t in granted_tools(FALLBACK_CATALOG, BOSS)] == \
        ["calendar_availability", "propose_meeting", "confirm_meeting"]
    assert granted_tools(FALLBACK_CATALOG, ["send_email"]) == []


def test_claude_sees_only_the_notices_grant_no_built_in_tool_and_nothing_unapproved(
        appliance: Appliance, fake_sdk: dict[str, Any]) -> None:
    notice = appliance.grant(mail("Conflict on Thursday", capabilities=["read_calendar"], thread="T-bot"))
    ClaudePlanner(appliance, log=lambda line: None).handle(notice)
    options = fake_sdk["options"]
    assert [t.name for t in options.mcp_servers["mail"]["tools"]] == ["calendar_availability", "reply"]
    assert options.allowed_tools == ["mcp__mail__calendar_availability", "mcp__mail__reply"]
    assert (options.tools, options.permission_mode, options.strict_mcp_config, options.setting_sources) == \
        ([], "dontAsk", True, [])
    assert "confirm" not in fake_sdk
    assert [name for name, _ in appliance.calls] == ["calendar_availability"]
    assert appliance.replies == [Sent(notice.email_id, "Thursday 10:00?", f"reply-{notice.email_id}")]
    assert fake_sdk["again"]["is_error"] is True  # one reply per message
    assert appliance.usage == [("T-bot", 1020)]
    assert "From: boss@acme.com" in fake_sdk["prompt"]


def test_claude_keeps_the_thread_and_a_refusal_reaches_the_model_as_an_error(
        appliance: Appliance, fake_sdk: dict[str, Any]) -> None:
    planner = ClaudePlanner(appliance, log=lambda line: None)
    planner.handle(appliance.grant(mail("Meet Thursday?")))
    assert fake_sdk["confirm"]["content"][0]["text"].startswith('{"status": "nothing_to_confirm"')
    appliance.grants["token-T1-2"] = ("T1", ["read_calendar"])  # the grant narrowed under the model's feet

    async def call_confirm() -> Any:
        handler = planner._handler(mail("yes", n=2), FALLBACK_CATALOG[2])
        return await handler({})

    refused = asyncio.run(call_confirm())
    assert refused["is_error"] is True and "capability_missing" in refused["content"][0]["text"]
    planner.handle(appliance.grant(mail("yes, book it", n=3)))
    assert "You replied:\nThursday 10:00?" in fake_sdk["prompt"]


# -- the wiring -------------------------------------------------------------------------------

def test_the_wiring_is_at_most_40_lines() -> None:
    assert len((PACKAGE / "agent.py").read_text().splitlines()) <= 40


def test_the_policy_and_configuration_load() -> None:
    from appliance.config import load_config
    from appliance.policy import load_policy

    policy = load_policy(PACKAGE / "policy.toml")
    rules = {(r.match.address or r.match.domain): r for r in policy.senders}
    boss = rules["boss@acme.com"]
    assert (boss.match.require_dkim, boss.capabilities) == (True, BOSS)
    assert "send_email" not in boss.capabilities and policy.outbound.allow_recipients == []
    assert rules["calendar-bot.internal"].capabilities == ["read_calendar"]
    config = load_config(PACKAGE / "appliance.toml", environ={})
    assert {t.name: t.capability for t in config.tools} == TOOL_CAPABILITY
    assert config.outbound.transport == "capture"
