"""``appliance policy check`` and ``appliance policy explain``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.errors import InputError, MalformedMessage, Problem
from appliance.gate import AuthSummary, Decision, Envelope, InMemoryLimits, TraceStep, assess
from appliance.guards import scanned_parts
from appliance.inbound.replies import SmtpReply, smtp_reply
from appliance.mail import parse_message, read_for_gate
from appliance.mailauth import DnsResolver
from appliance.policy import MailPolicy, load_policy


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
    for t in decision.trace:
        lines.append(f"{t.step:<{width}}  {t.outcome:<10} {t.detail}")
    caps = ", ".join(decision.capabilities) or "none"
    lines.append(f"=> {decision.action}" + (f" ({decision.reason})" if decision.reason else "")
                 + f": {smtp_reply(decision).line()}; capabilities: {caps}")
    return "\n".join(lines)
