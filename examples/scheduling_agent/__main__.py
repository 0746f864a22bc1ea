"""``make run``'s agent: the scheduling agent and, in a thread beside it, its calendar service.

    python -m examples.scheduling_agent [PORT] [--calendar-port 9001]

The same two parts as ``agent.py`` and ``calendar_service.py`` run as separate processes; here
one process holds both, so the sandbox's launcher has one child to start and stop for them. The
calendar starts with a demo fortnight (stand-ups, Thursday board reviews).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer

from . import calendar_service


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.scheduling_agent")
    parser.add_argument("port", nargs="?", type=int, default=9000, help="the webhook's port")
    parser.add_argument("--calendar-port", type=int, default=9001)
    args = parser.parse_args(argv)
    bookings = calendar_service.demo_bookings(datetime.now(UTC).date())
    try:
        calendar = calendar_service.serve(calendar_service.Calendar(bookings), args.calendar_port)
    except OSError as exc:
        sys.exit(f"[calendar] cannot listen on 127.0.0.1:{args.calendar_port}: {exc.strerror}")
    threading.Thread(target=calendar.serve_forever, name="calendar", daemon=True).start()
    from .agent import Hook, brain  # reads AGENT_WEBHOOK_SECRET, AGENT_API_KEY, APPLIANCE_URL

    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Hook)
    except OSError as exc:
        sys.exit(f"[agent] cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
    print(f"[agent] scheduling agent ({type(brain).__name__}) on http://127.0.0.1:{args.port}/hook, "
          f"its calendar on http://127.0.0.1:{args.calendar_port} ({len(bookings)} bookings)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
