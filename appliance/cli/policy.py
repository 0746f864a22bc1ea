"""``appliance policy check``, ``appliance policy explain`` and ``appliance policy replay``."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from appliance.audit.replay import history_replay
from appliance.cli import backend
from appliance.errors import InputError, MalformedMessage, Problem
from appliance.gate import AuthSummary, Decision, Envelope, InMemoryLimits, TraceStep, assess
from appliance.gate.replay import ReplayReport
from appliance.guards import scanned_parts
from appliance.inbound.replies import SmtpReply, smtp_reply
from appliance.mail import parse_message, read_for_gate
from appliance.mailauth import DnsResolver
from appliance.policy import MailPolicy, load_policy, policy_to_builtins


def register(groups: Any) -> None:
    policy = groups.add_parser("policy", help="check a policy file or explain a decision")
    sub = policy.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a policy file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=run_check)

    explain = sub.add_parser("explain", help="evaluate one message as the gate would at SMTP DATA time")
    explain.add_argument("--policy", type=Path, required=True, help="policy file (.py, .toml, .yaml, .json)")
    explain.add_argument("--eml", type=Path, required=True, help="the raw message")
    explain.add_argument("--client-ip", default="127.0.0.1")
    explain.add_argument("--helo", default=None, help="default: the client IP")
    explain.add_argument("--mail-from", default=None, help='default: the From address; "" is the null sender')
    explain.add_argument("--rcpt", default=None, help="default: the first To address")
    explain.add_argument("--nameserver", action="append", default=[], metavar="HOST:PORT")
    explain.add_argument("--now", type=float, default=None, metavar="UNIX_SECONDS")
    explain.add_argument("--json", action="store_true", help="one JSON object on stdout")
    explain.set_defaults(handler=run_explain)

    replay = sub.add_parser("replay", help="judge an agent's recorded history again under another policy")
    backend.add_config_argument(replay)
    replay.add_argument("--agent", required=True, help="the agent whose history is replayed")
    replay.add_argument("--policy", type=Path, required=True, help="the policy to try (.py, .toml, .yaml, .json)")
    replay.add_argument("--since", default="30d",
                        help="how far back: 30d, 12h, 90m, 2w, or an ISO date or time (UTC unless it says)")
    replay.add_argument("--json", action="store_true", help="one JSON object on stdout")
    replay.set_defaults(handler=run_replay)


def run_check(args: argparse.Namespace) -> int:
    policy = load_policy(args.file)
    print(f"{args.file}: ok ({summarize(policy)})")
    return 0


def summarize(policy: MailPolicy) -> str:
    """One line: what the policy lets through."""
    return (f"defaultAction {policy.default_action}, {len(policy.senders)} sender rule(s), "
            f"{len(policy.content_guards)} content guard(s), audit {policy.audit_log.retention_days} days")


class ExplainReport(msgspec.Struct, kw_only=True):
    """The ``--json`` contract of ``policy explain`` (scripts depend on it)."""

    action: str
    reason: str | None
    smtp: SmtpReply
    capabilities: list[str]
    rule: int | None
    auth: AuthSummary
    trace: list[TraceStep]


def run_explain(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    try:
        raw = args.eml.read_bytes()
    except OSError as exc:
        raise InputError([Problem(source=str(args.eml), path="", reason=exc.strerror or str(exc))]) from exc
    try:
        resolver = DnsResolver(args.nameserver)
    except ValueError as exc:
        raise InputError([Problem(source="--nameserver", path="", reason=str(exc))]) from exc
    try:
        parsed = parse_message(raw)
    except MalformedMessage:
        parsed = None
    mail_from = args.mail_from if args.mail_from is not None else (parsed.sender.address if parsed else "")
    rcpt = args.rcpt or (parsed.to[0].address if parsed and parsed.to else "")
    envelope = Envelope(
        client_ip=args.client_ip,
        helo=args.helo or args.client_ip,
        mail_from=mail_from,
        rcpt_to=[rcpt] if rcpt else [],
    )
    now = args.now if args.now is not None else time.time()
    decision = asyncio.run(assess(policy, envelope, raw, agent=rcpt, resolver=resolver,
                                  limits=InMemoryLimits(), now=now))
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(report(decision)) + b"\n")
    else:
        print(render(decision, envelope))
        if parsed is not None and policy.content_guards:
            print("\nscanned text:")
            readable = read_for_gate(raw).readable
            for part in scanned_parts(readable) if readable is not None else []:
                text = part.text if len(part.text) <= 200 else part.text[:200] + "…"
                print(f"  [{part.where}] {text}")
    return 0


def report(decision: Decision) -> ExplainReport:
    """The JSON contract's view of a decision."""
    return ExplainReport(
        action=decision.action,
        reason=decision.reason,
        smtp=smtp_reply(decision),
        capabilities=decision.capabilities,
        rule=decision.rule,
        auth=decision.auth,
        trace=decision.trace,
    )


def render(decision: Decision, envelope: Envelope) -> str:
    """A readable trace: one line per step, then the verdict."""
    lines = [f"envelope: client {envelope.client_ip} helo {envelope.helo} "
             f"from <{envelope.mail_from}> to {', '.join(envelope.rcpt_to) or '-'}",
             f"auth: spf={decision.auth.spf} dkim={decision.auth.dkim} dmarc={decision.auth.dmarc}"]
    width = max((len(t.step) for t in decision.trace), default=0)
    lines.extend(trace_line(t, width) for t in decision.trace)
    caps = ", ".join(decision.capabilities) or "none"
    lines.append(f"=> {decision.action}" + (f" ({decision.reason})" if decision.reason else "")
                 + f": {smtp_reply(decision).line()}; capabilities: {caps}")
    return "\n".join(lines)


def trace_line(step: TraceStep, width: int = 0) -> str:
    """One gate step as ``explain`` shows it: step, outcome, why."""
    return f"{step.step:<{width}}  {step.outcome:<10} {step.detail}"


@backend.reports_failures
def run_replay(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    since = parse_since(args.since, datetime.now(UTC).replace(tzinfo=None))
    config = backend.load(args)
    agent = args.agent.strip().lower()
    if config.agent(agent) is None:
        known = ", ".join(a.address for a in config.agents) or "none"
        raise InputError([Problem(source="--agent", path="", reason=f"{args.agent!r} is not an agent of "
                                  f"{args.config} (its agents: {known})")])
    reading = config.reading.limits()

    def remote(api: backend.AdminApi) -> ReplayReport:
        # The running appliance replays in its own process; the policy goes as its document.
        request = {"agent": agent, "since": since.isoformat() + "Z", "policy": policy_to_builtins(policy)}
        return api.post("/api/v1/policies/replay/", into=ReplayReport, json=request)

    report = backend.run(config, local=lambda con: history_replay(con, agent=agent, policy=policy, since=since,
                                                                  reading=reading), remote=remote, api_timeout=600)
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(report) + b"\n")
    else:
        print(render_replay(report, args.policy))
    return 0


_SPAN = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime) -> datetime:
    """``30d`` (m, h, d, w) before ``now``, or an ISO date or time; naive UTC. InputError naming --since otherwise."""
    span = _SPAN.match(value.strip().lower())
    if span:
        return now - timedelta(**{_UNITS[span[2]]: int(span[1])})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InputError([Problem(source="--since", path="", reason=f"expected a span like 30d, 12h, 90m or 2w, "
                                  f"or an ISO date or time (2026-11-01, 2026-11-01T08:00Z), got {value!r}")]) from None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def render_replay(report: ReplayReport, policy: Path) -> str:
    """The replay as a table: counts old action to new, then each flip with its deciding step."""
    lines = [f"replay of {report.agent} since {report.since:%Y-%m-%d %H:%M} UTC under {policy}",
             f"{report.decisions} decision(s): {report.replayed} replayed, {report.unchanged} unchanged, "
             f"{len(report.flips)} changed, {len(report.not_replayable)} not replayable"]
    if report.transitions:
        lines += ["", f"{'old action':<12}    {'new action':<12} {'count':>6}"]
        lines += [f"{t.old_action:<12} -> {t.new_action:<12} {t.count:>6}" for t in report.transitions]
    if report.flips:
        lines += ["", "changed:"]
        for f in report.flips:
            lines.append(f"  {f.decision_id}  {f.ts:%Y-%m-%d %H:%M}  from {f.sender or '-'}  {f.subject!r}")
            old = f.old_action + (f" ({f.old_reason})" if f.old_reason else "")
            new = f.new_action + (f" ({f.new_reason})" if f.new_reason else "")
            lines.append(f"      {old} -> {new}  [{f.kind.replace('_', ' ')}]")
            lines.append(f"      {trace_line(f.step)}")
    if report.not_replayable:
        lines += ["", "not replayable:"]
        lines += [f"  {n.decision_id}  {n.ts:%Y-%m-%d %H:%M}  from {n.sender or '-'}  {n.action}: {n.reason} "
                  f"({n.detail})" for n in report.not_replayable]
    return "\n".join(lines)
