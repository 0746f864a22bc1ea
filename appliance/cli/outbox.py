"""``appliance outbox list|show ID``: what the agents sent, and where each recipient's copy is.

Works whether or not the appliance runs (``appliance.cli.backend``): on the
database file, or through the admin API (``GET /api/v1/outbox``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from appliance.cli import backend
from appliance.cli.backend import CommandFailed, reports_failures
from appliance.outbound.service import SentMessage, list_sent, sent_message


def register(groups: Any) -> None:
    outbox = groups.add_parser("outbox", help="sent mail: list, show (with each recipient's delivery status)")
    sub = outbox.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="sent messages, newest first")
    backend.add_config_argument(listing)
    listing.add_argument("--agent")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--after", metavar="EMAIL_ID", help="continue after this message (paging)")
    listing.add_argument("--json", action="store_true", help="a JSON array on stdout")
    listing.set_defaults(handler=run_list)

    show = sub.add_parser("show", help="one sent message and its recipients' delivery status")
    backend.add_config_argument(show)
    show.add_argument("email_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)


def _print_json(value: object) -> None:
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    sys.stdout.flush()


@reports_failures
def run_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CommandFailed(f"--limit must be 1 to 1000, got {args.limit}")
    rows = backend.run(
        backend.load(args),
        local=lambda con: list_sent(con, agent=args.agent, limit=args.limit, after=args.after),
        remote=lambda api: api.get("/api/v1/outbox", into=list[SentMessage], agent=args.agent, limit=args.limit,
                                   after=args.after))
    if args.json:
        _print_json(rows)
        return 0
    print(render_table(rows))
    return 0


def render_table(rows: list[SentMessage]) -> str:
    """One line per sent message, aligned."""
    header = ("EMAIL ID", "SENT (UTC)", "AGENT", "STATUS", "TO", "SUBJECT")
    lines = [header] + [
        (m.email_id, f"{m.sent_at:%Y-%m-%d %H:%M:%S}", m.agent, m.status,
         ", ".join([*m.to, *m.cc]) or "-", repr(m.subject)) for m in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    if not rows:
        out.append("(nothing sent)")
    return "\n".join(out)


@reports_failures
def run_show(args: argparse.Namespace) -> int:
    found = backend.run(
        backend.load(args),
        local=lambda con: sent_message(con, args.email_id),
        remote=lambda api: api.get(f"/api/v1/outbox/{args.email_id}", into=SentMessage))
    if found is None:
        raise CommandFailed(f"no sent message {args.email_id}")
    if args.json:
        _print_json(found)
        return 0
    m = found
    print(f"email {m.email_id} from {m.agent}, {m.status}, sent {m.sent_at:%Y-%m-%d %H:%M:%S} UTC")
    print(f"  subject:    {m.subject!r}")
    print(f"  message-id: {m.message_id or '-'}   thread {m.thread_id}   decision {m.decision_id}   {m.size} bytes")
    for r in m.recipients:
        last = f"  {r.last_code or ''} {r.last_detail or ''}".rstrip()
        peer = f" via {r.peer}" if r.peer else ""
        print(f"  {r.address}: {r.status} after {r.attempts} attempt(s){peer}{last}")
    return 0
