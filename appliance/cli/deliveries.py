"""``appliance deliveries list|show|replay|retry|enable|endpoints``: the webhook delivery ledger.

Works whether or not the appliance runs (``appliance.cli.backend``). ``replay``
puts a dead or failed delivery back to pending with the same id; ``retry``
makes a pending one (waiting for its next attempt) due now; a webhook
disabled by a 410 stays disabled until ``enable AGENT``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb
import msgspec

from appliance.cli import backend
from appliance.cli.backend import AdminApi, CommandFailed, reports_failures
from appliance.config import ApplianceConfig
from appliance.delivery import manage


def register(groups: Any) -> None:
    deliveries = groups.add_parser("deliveries", help="webhook deliveries: list, show, replay, retry, enable")
    sub = deliveries.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", help="deliveries, newest first")
    backend.add_config_argument(listing)
    listing.add_argument("--status", help="pending, delivered, dead, failed, stream, held, discarded")
    listing.add_argument("--agent")
    listing.add_argument("--type", dest="event_type", help="e.g. message.received")
    listing.add_argument("--before", type=int, metavar="SEQ", help="older than this seq (paging)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="a JSON array on stdout")
    listing.set_defaults(handler=run_list)

    show = sub.add_parser("show", help="one delivery: its attempts, data and endpoint")
    backend.add_config_argument(show)
    show.add_argument("delivery_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)

    replay = sub.add_parser("replay", help="send dead or failed deliveries again (same delivery id)")
    backend.add_config_argument(replay)
    replay.add_argument("delivery_ids", nargs="+", metavar="DELIVERY_ID")
    replay.set_defaults(handler=run_replay)

    retry = sub.add_parser("retry", help="attempt pending deliveries now instead of at their next scheduled time")
    backend.add_config_argument(retry)
    retry.add_argument("delivery_ids", nargs="+", metavar="DELIVERY_ID")
    retry.set_defaults(handler=run_retry)

    enable = sub.add_parser("enable", help="re-enable an agent's webhook disabled by a 410")
    backend.add_config_argument(enable)
    enable.add_argument("agent")
    enable.set_defaults(handler=run_enable)

    endpoints = sub.add_parser("endpoints", help="each agent's webhook and whether it is disabled")
    backend.add_config_argument(endpoints)
    endpoints.add_argument("--json", action="store_true")
    endpoints.set_defaults(handler=run_endpoints)


def _urls(config: ApplianceConfig) -> dict[str, str | None]:
    return {a.address.lower(): a.webhook_url for a in config.agents}


def _print_json(value: object) -> None:
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value)) + b"\n")
    sys.stdout.flush()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


@reports_failures
def run_list(args: argparse.Namespace) -> int:
    config = backend.load(args)
    rows = backend.run(
        config,
        local=lambda con: manage.list_deliveries(con, status=args.status, agent=args.agent,
                                                 event_type=args.event_type, before=args.before,
                                                 limit=args.limit),
        remote=lambda api: api.get("/api/v1/deliveries/", into=list[manage.DeliverySummary],
                                   status=args.status, agent=args.agent, event_type=args.event_type,
                                   before=args.before, limit=args.limit),
    )
    if args.json:
        _print_json(rows)
        return 0
    print(render_table(rows))
    return 0


def render_table(rows: list[manage.DeliverySummary]) -> str:
    """One line per delivery, aligned."""
    header = ("SEQ", "DELIVERY ID", "AGENT", "TYPE", "STATUS", "TRIES", "LAST", "NEXT ATTEMPT (UTC)")
    lines = [header] + [
        (str(r.seq), r.delivery_id, r.agent, r.event_type, r.status, str(r.attempts),
         str(r.last_status) if r.last_status is not None else ("error" if r.last_error else "-"),
         _when(r.next_attempt_at))
        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    if not rows:
        out.append("(no deliveries)")
    return "\n".join(out)


@reports_failures
def run_show(args: argparse.Namespace) -> int:
    config = backend.load(args)

    def local(con: duckdb.DuckDBPyConnection) -> manage.DeliveryDetail:
        detail = manage.get_delivery(con, args.delivery_id, _urls(config))
        if detail is None:
            raise CommandFailed(f"no delivery {args.delivery_id}")
        return detail

    detail = backend.run(config, local=local, remote=lambda api: api.get(
        f"/api/v1/deliveries/{args.delivery_id}", into=manage.DeliveryDetail))
    if args.json:
        _print_json(detail)
        return 0
    d = detail.delivery
    print(f"delivery {d.delivery_id} (seq {d.seq}): {d.event_type} for {d.agent}")
    print(f"  status {d.status}, {d.attempts} attempt(s), created {_when(d.created_at)} UTC"
          + (f", next attempt {_when(d.next_attempt_at)} UTC" if d.next_attempt_at else ""))
    if d.email_id:
        print(f"  email {d.email_id}, decision {d.decision_id}")
    ep = detail.endpoint
    state = f"DISABLED since {_when(ep.disabled_at)} UTC: {ep.reason}" if ep.disabled else "enabled"
    print(f"  endpoint {ep.url or '(none: event stream only)'}: {state}")
    for a in detail.attempts:
        answer = str(a.status) if a.status is not None else "no answer"
        latency = f"{a.latency_ms:.0f} ms" if a.latency_ms is not None else "-"
        print(f"  attempt {a.attempt} at {_when(a.ts)}: {answer}, {latency}" + (f", {a.error}" if a.error else ""))
    return 0


_Change = Callable[..., manage.ReplayResult]


@reports_failures
def run_replay(args: argparse.Namespace) -> int:
    return _change_each(args, manage.replay, "replay", (manage.DeliveryNotFound, manage.NotReplayable))


@reports_failures
def run_retry(args: argparse.Namespace) -> int:
    return _change_each(args, manage.retry_now, "retry", (manage.DeliveryNotFound, manage.NotRetryable))


def _change_each(args: argparse.Namespace, change: _Change, action: str,
                 refusals: tuple[type[Exception], ...]) -> int:
    """``change`` each delivery (``POST .../{id}/{action}`` when the appliance runs); 1 if any was refused."""
    config = backend.load(args)
    failures = 0
    for delivery_id in args.delivery_ids:

        def local(con: duckdb.DuckDBPyConnection, delivery_id: str = delivery_id) -> manage.ReplayResult:
            try:
                result: manage.ReplayResult = change(con, delivery_id, now=time.time(), by="cli")
            except refusals as exc:
                raise CommandFailed(str(exc)) from exc
            return result

        def remote(api: AdminApi, delivery_id: str = delivery_id) -> manage.ReplayResult:
            return api.post(f"/api/v1/deliveries/{delivery_id}/{action}", into=manage.ReplayResult)

        try:
            result = backend.run(config, local=local, remote=remote, write=True)
        except CommandFailed as exc:
            print(f"appliance: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{result.delivery_id}: {result.status}" + (", next attempt now" if action == "retry" else ""))
        if result.endpoint_disabled:
            agent = _agent_of(config, result.delivery_id)
            print(f"  note: the webhook of {agent} is disabled; nothing is sent until "
                  f"`appliance deliveries enable {agent}`", file=sys.stderr)
    return 1 if failures else 0


def _agent_of(config: ApplianceConfig, delivery_id: str) -> str:
    try:
        detail = backend.run(
            config,
            local=lambda con: manage.get_delivery(con, delivery_id),
            remote=lambda api: api.get(f"/api/v1/deliveries/{delivery_id}", into=manage.DeliveryDetail))
    except CommandFailed:
        return "AGENT"
    return detail.delivery.agent if detail is not None else "AGENT"


@reports_failures
def run_enable(args: argparse.Namespace) -> int:
    config = backend.load(args)
    agent = args.agent.strip().lower()
    if config.agent(agent) is None:
        raise CommandFailed(f"{args.agent} is not an agent of this appliance")

    def local(con: duckdb.DuckDBPyConnection) -> manage.EndpointState:
        manage.enable_endpoint(con, agent, by="cli")
        return next(s for s in manage.endpoint_states(con, _urls(config)) if s.agent == agent)

    state = backend.run(config, local=local, write=True, remote=lambda api: api.post(
        f"/api/v1/endpoints/{agent}/enable", into=manage.EndpointState))
    print(f"{state.agent}: webhook {state.url or '(none)'} {'disabled' if state.disabled else 'enabled'}")
    return 0


@reports_failures
def run_endpoints(args: argparse.Namespace) -> int:
    config = backend.load(args)
    states = backend.run(
        config,
        local=lambda con: manage.endpoint_states(con, _urls(config)),
        remote=lambda api: api.get("/api/v1/endpoints/", into=list[manage.EndpointState]))
    if args.json:
        _print_json(states)
        return 0
    for s in states:
        state = f"DISABLED since {_when(s.disabled_at)} UTC: {s.reason}" if s.disabled else "enabled"
        print(f"{s.agent}  {s.url or '(event stream only)'}  {state}")
    return 0
