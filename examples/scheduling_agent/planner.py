"""The deterministic planner: the scheduling agent's decisions without a model, so it runs offline.

It reads what the sender wants (a meeting, a yes, a no), uses only the tools the
sender's grant covers, and answers by reply. What it proposed in a thread is
remembered here and held in the calendar (``propose_meeting``), so a "yes" in the
same thread books exactly that slot.

The appliance checks every tool call against the capability token anyway: a
planner that tried more than the grant would get ``CapabilityMissing``, and the
calendar would never hear of it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from appliance.sdk import ApiError, CapabilityMissing, IdempotencyConflict, MessageData

AVAILABILITY, PROPOSE, CONFIRM = "calendar_availability", "propose_meeting", "confirm_meeting"
TOOL_CAPABILITY = {AVAILABILITY: "read_calendar", PROPOSE: "propose_meeting", CONFIRM: "confirm_meeting"}
"""Each tool and the capability the appliance requires for it (as in appliance.toml's [[tools]])."""

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_YES = re.compile(r"\b(yes|yep|yeah|confirm(ed)?|book it|sounds good|works for me|that works|perfect|go ahead|"
                  r"ok(ay)?|great)\b", re.IGNORECASE)
_NO = re.compile(r"\b(nope|another (time|slot|day|option)|different (time|slot|day)|other time|"
                 r"(does ?n[o']t|won't|will not) work|can'?t (make|do)|not (then|that (time|one)))\b", re.IGNORECASE)
_MEETING = re.compile(r"\b(meet(ing)?|call|catch up|sync|slot|schedule|chat|get together|appointment)\b",
                      re.IGNORECASE)
_MINUTES = re.compile(r"\b(\d{1,3})\s*(?:-\s*)?(?:min(?:ute)?s?)\b", re.IGNORECASE)
_HOURS = re.compile(r"\b(an|one|1|two|2)\s*(?:-\s*)?hours?\b", re.IGNORECASE)
_ISO_DAY = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
SEARCH_DAYS = 7
"""How far the planner looks past the asked day when that day is full."""


class Tools(Protocol):
    """What the planner needs from the SDK's ``Client``."""

    def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *, capability_token: str) -> Any: ...

    def reply(self, message: MessageData, text: str, *, idempotency_key: str | None = None) -> Any: ...


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime

    @classmethod
    def of(cls, wire: dict[str, str]) -> Slot:
        return cls(datetime.fromisoformat(wire["start"]), datetime.fromisoformat(wire["end"]))

    def wire(self) -> dict[str, str]:
        return {"start": self.start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": self.end.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def __str__(self) -> str:
        return f"{self.start:%A %d %B, %H:%M}-{self.end:%H:%M} UTC"


@dataclass
class Proposal:
    title: str
    slot: Slot
    minutes: int
    rejected: list[Slot] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """What a message asks for: a meeting ``minutes`` long on or after ``day``."""

    day: date
    minutes: int


def asked_day(text: str, received: date) -> date:
    """The day the text names (an ISO date, "today", "tomorrow", a weekday: its next occurrence), else tomorrow."""
    found = _ISO_DAY.search(text)
    if found:
        try:
            return date.fromisoformat(found[1])
        except ValueError:
            pass
    lowered = text.lower()
    if re.search(r"\btoday\b", lowered):
        return received
    if re.search(r"\btomorrow\b", lowered):
        return received + timedelta(days=1)
    for index, name in enumerate(WEEKDAYS):
        if re.search(rf"\b{name}\b", lowered):
            return received + timedelta(days=(index - received.weekday() - 1) % 7 + 1)
    return received + timedelta(days=1)


def asked_minutes(text: str) -> int:
    if re.search(r"\bhalf an hour\b", text, re.IGNORECASE):
        return 30
    found = _MINUTES.search(text)
    if found and 15 <= int(found[1]) <= 480:
        return int(found[1])
    found = _HOURS.search(text)
    if found:
        return 120 if found[1].lower() in ("two", "2") else 60
    return 30


def title_of(subject: str) -> str:
    return re.sub(r"^\s*((re|fwd?|aw)\s*:\s*)+", "", subject, flags=re.IGNORECASE).strip() or "Meeting"


class Planner:
    """Decides what to do with each message, and does it through ``tools`` (the SDK client)."""

    def __init__(self, tools: Tools, *, log: Callable[[str], None] = print) -> None:
        self.tools = tools
        self.log = log
        self.proposals: dict[str, Proposal] = {}
        """What was last proposed in each thread."""
        self._lock = threading.Lock()

    def handle(self, message: MessageData) -> None:
        """Act on one message (the sender's grant is ``message.capabilities``)."""
        with self._lock:
            try:
                self._handle(message)
            except CapabilityMissing as exc:  # only when the grant changed under us: the appliance said no
                self.log(f"[agent]   refused by the appliance: {exc.reason} ({exc.detail})")
            except ApiError as exc:
                self.log(f"[agent]   the appliance answered {exc.status} {exc.reason}: {exc.detail}")

    def _handle(self, message: MessageData) -> None:
        granted = set(message.capabilities)
        if not granted & {"propose_meeting", "confirm_meeting"}:
            self._notice(message, granted)  # a sender who may not have us change the calendar
            return
        pending = self.proposals.get(message.thread_id)
        text = message.text
        if pending is not None and _NO.search(text):
            self._propose(message, granted, Request(pending.slot.start.date(), pending.minutes),
                          rejected=[*pending.rejected, pending.slot])
        elif pending is not None and _YES.search(text):
            self._confirm(message, granted, pending)
        elif _MEETING.search(text) or _MEETING.search(message.subject):
            self._propose(message, granted, Request(asked_day(text, message.received_at.date()), asked_minutes(text)))
        elif _YES.search(text) and "confirm_meeting" in granted:
            self._confirm(message, granted, None)  # a yes whose proposal this process forgot: the calendar's hold
        else:
            self.log(f"[agent]   nothing to schedule in {message.email_id}")

    def _call(self, message: MessageData, granted: set[str], tool: str, arguments: dict[str, Any]) -> Any:
        if TOOL_CAPABILITY[tool] not in granted:
            return None
        self.log(f"[agent]   {tool} {arguments}")
        return self.tools.call_tool(tool, arguments, capability_token=message.capability_token)

    def _reply(self, message: MessageData, text: str) -> None:
        try:
            # One reply per received message, however often its event is delivered.
            self.tools.reply(message, text, idempotency_key=f"reply-{message.email_id}")
            self.log(f"[agent]   replied: {text.splitlines()[0]}")
        except IdempotencyConflict:
            self.log(f"[agent]   already replied to {message.email_id}")

    def _free(self, message: MessageData, granted: set[str], request: Request, rejected: list[Slot]) -> list[Slot]:
        found = self._call(message, granted, AVAILABILITY, {"from": request.day.isoformat(), "days": SEARCH_DAYS,
                                                            "durationMinutes": request.minutes, "limit": 10})
        if found is None:
            return []
        return [s for s in (Slot.of(w) for w in found.get("slots", [])) if s not in rejected]

    def _propose(self, message: MessageData, granted: set[str], request: Request,
                 rejected: list[Slot] | None = None) -> None:
        rejected = rejected or []
        if "read_calendar" not in granted:
            self._reply(message, "I'm sorry: I may not look at the calendar for you, so I cannot propose a time.")
            return
        title = title_of(message.subject)
        for slot in self._free(message, granted, request, rejected):
            held = self._call(message, granted, PROPOSE, {**slot.wire(), "title": title})
            if held is not None and held.get("status") != "held":
                continue  # taken since we looked (another thread's hold): the next one
            self.proposals[message.thread_id] = Proposal(title, slot, request.minutes, rejected)
            how = ('Reply "yes" and I will book it' if "confirm_meeting" in granted
                   else "I may not book it myself; please add it to the calendar")
            kept = " I have held it for you." if held is not None else ""
            self._reply(message, f"How about {slot} for {title!r}?{kept}\n\n"
                                 f'{how}, or "another time" for the next free slot.')
            return
        self._reply(message, f"I could not find a free {request.minutes}-minute slot within "
                             f"{SEARCH_DAYS} days of {request.day:%A %d %B}.")

    def _confirm(self, message: MessageData, granted: set[str], pending: Proposal | None) -> None:
        if "confirm_meeting" not in granted:
            self._reply(message, "I'm sorry: I may not book meetings for you.")
            return
        arguments = {**pending.slot.wire(), "title": pending.title} if pending else {}
        booked = self._call(message, granted, CONFIRM, arguments)
        status = booked.get("status") if isinstance(booked, dict) else None
        if status == "booked":
            self.proposals.pop(message.thread_id, None)
            slot = Slot.of(booked["booking"])
            self._reply(message, f"Booked: {booked['booking']['title']!r}, {slot}. See you then.")
        elif status == "conflict" and pending is not None:
            self._propose(message, granted, Request(pending.slot.start.date(), pending.minutes),
                          rejected=[*pending.rejected, pending.slot])
        else:
            self._reply(message, "I have no proposal waiting in this thread. Which day would suit you?")

    def _notice(self, message: MessageData, granted: set[str]) -> None:
        """A notice from a sender who may not have us change the calendar: look, note, change nothing."""
        day = asked_day(message.text, message.received_at.date())
        found = self._call(message, granted, AVAILABILITY, {"from": day.isoformat(), "days": 1, "limit": 1})
        busy = found.get("busy", []) if isinstance(found, dict) else []
        self.log(f"[agent]   notice from {message.sender} about {day:%A %d %B}: {len(busy)} busy slot(s) that day; "
                 f"nothing changed (granted: {', '.join(sorted(granted)) or 'nothing'})")



def describe(message: MessageData) -> str:
    """One line for the agent's log: who wrote, in which thread, what was verified, what they may ask."""
    return (f"[agent] mail from {message.sender} ({message.subject!r}), thread {message.thread_id}, "
            f"auth spf={message.auth.spf} dkim={message.auth.dkim} dmarc={message.auth.dmarc}; "
            f"may: {', '.join(message.capabilities) or 'nothing'}")
