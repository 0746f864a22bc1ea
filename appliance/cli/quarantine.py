"""``appliance quarantine list|show|release|delete``: review held mail."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from appliance.cli import backend
from appliance.inbound import quarantine
from appliance.store.messages import MessageSummary


def register(groups: Any) -> None:
    group = groups.add_parser("quarantine", help="review quarantined messages")
    sub = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="held messages, newest first")
    backend.add_config_argument(listing)
    listing.add_argument("--agent")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=run_list)
    for name, handler, text in (("show", run_show, "one held message, with why it was held"),
                                ("release", run_release, "deliver a held message to its agent"),
                                ("delete", run_delete, "delete a held message (its delivery is discarded)")):
        cmd = sub.add_parser(name, help=text)
        backend.add_config_argument(cmd)
        cmd.add_argument("email_id")
        cmd.set_defaults(handler=handler)


@backend.reports_failures
def run_list(args: argparse.Namespace) -> int:
    held = backend.run(backend.load(args), local=lambda con: quarantine.list_held(con, args.agent, args.limit),
                       remote=lambda api: api.get("/api/v1/quarantine/", agent=args.agent, limit=args.limit,
                                                  into=list[MessageSummary]))
    for m in held:
        print(f"{m.email_id}  {m.received_at:%Y-%m-%d %H:%M}  {m.agent}  from {m.sender}  {m.subject!r}")
    print(f"({len(held)} held)")
    return 0


@backend.reports_failures
def run_show(args: argparse.Namespace) -> int:
    held = backend.run(backend.load(args), local=lambda con: quarantine.show(con, args.email_id),
                       remote=lambda api: api.get(f"/api/v1/quarantine/{args.email_id}",
                                                  into=quarantine.HeldMessage))
    if held is None:
        raise backend.CommandFailed(f"no quarantined message {args.email_id}")
    m = held.message
    print(f"email {m.email_id} for {m.agent} from {m.sender}, held: {held.reason or '-'}, "
          f"decision {m.decision_id}\n")
    print(held.raw)
    return 0


@backend.reports_failures
def run_release(args: argparse.Namespace) -> int:
    _change(args, local=quarantine.release, remote=("POST", f"/api/v1/quarantine/{args.email_id}/release"))
    print(f"released {args.email_id}: it will be delivered to its agent")
    return 0


@backend.reports_failures
def run_delete(args: argparse.Namespace) -> int:
    _change(args, local=quarantine.delete, remote=("DELETE", f"/api/v1/quarantine/{args.email_id}"))
    print(f"deleted {args.email_id}")
    return 0


def _change(args: argparse.Namespace, *, local: Callable[..., bool], remote: tuple[str, str]) -> None:
    """Release or delete one held message, on the file or through the running appliance."""
    done = backend.run(backend.load(args), write=True,
                       local=lambda con: local(con, args.email_id, by="cli"),
                       remote=lambda api: api.request(*remote).is_success)
    if not done:
        raise backend.CommandFailed(f"no quarantined message {args.email_id}")
