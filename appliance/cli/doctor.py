"""``appliance doctor``: whether the box works, a line per check, what to do for each failing one."""

from __future__ import annotations

__all__ = ["register", "run_doctor"]

import argparse
import asyncio
from typing import Any

import msgspec

from appliance.cli import backend
from appliance.doctor import CHECKS, render
from appliance.doctor.examination import DoctorOptions, examine


def register(groups: Any) -> None:
    doctor = groups.add_parser(
        "doctor", help="check DNS, ports, certificates, a test message and DMARC reports; exit 0 only when all ok")
    backend.add_config_argument(doctor)
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--port", type=int, action="append", default=[], metavar="N",
                        help="check port N too (repeatable); a standard port (25, 465, 587, 443) keeps its TLS check")
    doctor.add_argument("--skip", action="append", default=[], choices=CHECKS, metavar="CHECK",
                        help=f"leave a check out (repeatable): {', '.join(CHECKS)}")
    doctor.add_argument("--wait", type=float, default=15.0, metavar="SECONDS",
                        help="how long to wait for the test message's decision (default 15)")
    doctor.set_defaults(handler=run_doctor)


@backend.reports_failures
def run_doctor(args: argparse.Namespace) -> int:
    config = backend.load(args)
    bad = [p for p in args.port if not 0 < p < 65536]
    if bad:
        raise backend.CommandFailed(f"--port {bad[0]}: expected a TCP port from 1 to 65535")
    options = DoctorOptions(skip=frozenset(args.skip), ports=tuple(args.port), decision_within=args.wait)
    diagnosis = asyncio.run(examine(config, options))
    if args.json:
        body = {"healthy": diagnosis.healthy, "findings": diagnosis.findings, "skipped": diagnosis.skipped}
        print(msgspec.json.encode(body).decode())
    else:
        print(render(diagnosis))
    return 0 if diagnosis.healthy else 1
