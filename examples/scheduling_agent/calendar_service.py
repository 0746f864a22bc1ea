"""The calendar behind the scheduling agent's tools: free slots, holds, bookings, conflict detection.

The appliance forwards tool calls here (``[[tools]]`` in appliance.toml) only when the
sender's grant includes the tool's capability, with ``X-Appliance-Thread`` naming the
thread the capability token was issued for. It listens on 127.0.0.1 only: the appliance
is its one client.

    POST /availability  {"from": "2026-11-26", "days": 1, "durationMinutes": 30, "limit": 3}
                        -> {"slots": [{"start", "end"}], "busy": [{"start", "end", "title"}]}
    POST /propose       {"start", "end", "title"} -> {"status": "held", "hold": {...}} | {"status": "conflict", ...}
    POST /confirm       {"start"?, "end"?, "title"?} -> {"status": "booked", "booking": {...}}
                        | {"status": "conflict", "conflicts": [...]} | {"status": "nothing_to_confirm"}
    GET  /bookings      everything booked and held;  GET /calls: every call received, in order

Times are ISO 8601 in UTC; working hours are 09:00-17:00, Monday to Friday. A thread holds
at most one slot; confirming books the thread's hold (or the slot named, when free). Domain
outcomes (a conflict) are 200 answers with a ``status``; 400 is a malformed call.

    python -m examples.scheduling_agent.calendar_service [PORT] [--bookings FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

WORK_START, WORK_END = time(9, 0), time(17, 0)
STEP = timedelta(minutes=30)
"""Slots start on the hour and the half hour."""
MAX_DAYS = 31
MAX_BODY = 64 * 1024


class BadCall(ValueError):
    """A call the calendar cannot make sense of (400)."""


@dataclass(frozen=True)
class Entry:
    """A booking or a hold."""

    id: str
    start: datetime
    end: datetime
    title: str
    thread: str | None = None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and start < self.end

    def wire(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = iso(self.start), iso(self.end)
        return out


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise BadCall(f"{field}: expected an ISO 8601 time, got {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadCall(f"{field}: not an ISO 8601 time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_day(value: object, field: str) -> date:
    if not isinstance(value, str):
        raise BadCall(f"{field}: expected YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise BadCall(f"{field}: not a date: {value!r}") from None


def number(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadCall(f"{field}: expected an integer from {low} to {high}, got {value!r}")
    return value


class Calendar:
    """One person's calendar, in memory, safe to share between request threads."""

    def __init__(self, bookings: list[Entry] | None = None) -> None:
        self._lock = threading.Lock()
        self.bookings: list[Entry] = list(bookings or [])
        self.holds: dict[str, Entry] = {}
        """The one slot each thread holds, by thread."""
        self.calls: list[dict[str, Any]] = []

    def conflicts(self, start: datetime, end: datetime, thread: str | None) -> list[Entry]:
        """What is in the way of ``start``-``end`` for ``thread``: bookings, and other threads' holds."""
        taken = [b for b in self.bookings if b.overlaps(start, end)]
        return taken + [h for t, h in self.holds.items() if t != thread and h.overlaps(start, end)]

    def availability(self, body: dict[str, Any], thread: str | None) -> dict[str, Any]:
        first = parse_day(body.get("from", datetime.now(UTC).date().isoformat()), "from")
        days = number(body, "days", 1, 1, MAX_DAYS)
        length = timedelta(minutes=number(body, "durationMinutes", 30, 15, 480))
        limit = number(body, "limit", 5, 1, 50)
        slots: list[dict[str, str]] = []
        busy: list[dict[str, Any]] = []
        with self._lock:
            for offset in range(days):
                day = first + timedelta(days=offset)
                opens = datetime.combine(day, WORK_START, UTC)
                closes = datetime.combine(day, WORK_END, UTC)
                busy += [b.wire() for b in sorted(self.conflicts(opens, closes, thread), key=lambda e: e.start)]
                if day.weekday() >= 5:
                    continue
                start = opens
                while start + length <= closes and len(slots) < limit:
                    if not self.conflicts(start, start + length, thread):
                        slots.append({"start": iso(start), "end": iso(start + length)})
                    start += STEP
        return {"slots": slots, "busy": busy}

    def _slot(self, body: dict[str, Any]) -> tuple[datetime, datetime, str]:
        start, end = parse_time(body.get("start"), "start"), parse_time(body.get("end"), "end")
        if not start < end <= start + timedelta(hours=8):
            raise BadCall("end must come after start, within 8 hours")
        title = body.get("title") or "Meeting"
        if not isinstance(title, str) or len(title) > 200:
            raise BadCall("title: expected a string of at most 200 characters")
        return start, end, title

    def propose(self, body: dict[str, Any], thread: str | None) -> dict[str, Any]:
        if thread is None:
            raise BadCall("a hold needs a thread (X-Appliance-Thread)")
        start, end, title = self._slot(body)
        with self._lock:
            found = self.conflicts(start, end, thread)
            if found:
                return {"status": "conflict", "conflicts": [c.wire() for c in found]}
            hold = Entry(id=f"h-{uuid.uuid4().hex[:10]}", start=start, end=end, title=title, thread=thread)
            self.holds[thread] = hold
        return {"status": "held", "hold": hold.wire()}

    def confirm(self, body: dict[str, Any], thread: str | None) -> dict[str, Any]:
        with self._lock:
            hold = self.holds.get(thread) if thread is not None else None
            if "start" in body or "end" in body:
                start, end, title = self._slot(body)
            elif hold is not None:
                start, end, title = hold.start, hold.end, hold.title
            else:
                return {"status": "nothing_to_confirm", "detail": "no slot named and none held for this thread"}
            found = self.conflicts(start, end, thread)
            if found:
                return {"status": "conflict", "conflicts": [c.wire() for c in found]}
            booking = Entry(id=f"b-{uuid.uuid4().hex[:10]}", start=start, end=end, title=title, thread=thread)
            self.bookings.append(booking)
            if thread is not None:
                self.holds.pop(thread, None)
        return {"status": "booked", "booking": booking.wire()}

    def listing(self) -> dict[str, Any]:
        with self._lock:
            return {"bookings": [b.wire() for b in sorted(self.bookings, key=lambda e: e.start)],
                    "holds": [h.wire() for h in self.holds.values()]}


def demo_bookings(today: date, days: int = 14) -> list[Entry]:
    """A plausible fortnight: a daily stand-up and, on Thursdays, a board review."""
    out: list[Entry] = []
    for offset in range(days):
        day = today + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        at = datetime.combine(day, WORK_START, UTC)
        out.append(Entry(id=f"standup-{day}", start=at, end=at + STEP, title="Stand-up"))
        if day.weekday() == 3:
            at = datetime.combine(day, time(14, 0), UTC)
            out.append(Entry(id=f"board-{day}", start=at, end=at + 2 * STEP, title="Board review"))
    return out


def load_bookings(path: Path) -> list[Entry]:
    """``[{"start", "end", "title"}, ...]`` from a JSON file."""
    rows = json.loads(path.read_text())
    return [Entry(id=row.get("id") or f"b-{i}", start=parse_time(row["start"], "start"),
                  end=parse_time(row["end"], "end"), title=row.get("title", "Busy")) for i, row in enumerate(rows)]


def handler_for(calendar: Calendar) -> type[BaseHTTPRequestHandler]:
    routes = {"/availability": calendar.availability, "/propose": calendar.propose, "/confirm": calendar.confirm}

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/bookings":
                self.answer(200, calendar.listing())
            elif self.path == "/calls":
                self.answer(200, {"calls": list(calendar.calls)})
            else:
                self.answer(404, {"error": "not_found"})

        def do_POST(self) -> None:
            route = routes.get(self.path)
            length = int(self.headers.get("content-length") or 0)
            if route is None or length > MAX_BODY:
                self.answer(404 if route is None else 413, {"error": "not_found" if route is None else "too_large"})
                return
            thread = self.headers.get("x-appliance-thread")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise BadCall("expected a JSON object")
                calendar.calls.append({"path": self.path, "thread": thread, "body": body})
                self.answer(200, route(body, thread))
            except (BadCall, ValueError) as exc:
                self.answer(400, {"error": "invalid_request", "detail": str(exc)})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def serve(calendar: Calendar, port: int = 0) -> ThreadingHTTPServer:
    """A server for ``calendar`` on 127.0.0.1 (port 0: any free one); call ``serve_forever`` on it."""
    return ThreadingHTTPServer(("127.0.0.1", port), handler_for(calendar))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the scheduling agent's calendar service")
    parser.add_argument("port", nargs="?", type=int, default=9001)
    parser.add_argument("--bookings", type=Path, help="JSON list of {start, end, title}; a demo fortnight if absent")
    args = parser.parse_args(argv)
    bookings = load_bookings(args.bookings) if args.bookings else demo_bookings(datetime.now(UTC).date())
    try:
        server = serve(Calendar(bookings), args.port)
    except OSError as exc:
        sys.exit(f"[calendar] cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
    print(f"[calendar] calendar service on http://127.0.0.1:{args.port} ({len(bookings)} bookings)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
