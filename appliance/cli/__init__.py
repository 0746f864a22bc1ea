"""The ``appliance`` command line: one sub-command group per domain noun."""

from __future__ import annotations

__all__ = ["main"]

import argparse
import os
import sys
from collections.abc import Sequence

from appliance.cli import audit as audit_cmd
from appliance.cli import deliveries as deliveries_cmd
from appliance.cli import dkim as dkim_cmd
from appliance.cli import doctor as doctor_cmd
from appliance.cli import domains as domains_cmd
from appliance.cli import outbox as outbox_cmd
from appliance.cli import policy as policy_cmd
from appliance.cli import quarantine as quarantine_cmd
from appliance.cli import run as run_cmd
from appliance.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    run_cmd.register(groups)
    policy_cmd.register(groups)
    audit_cmd.register(groups)
    quarantine_cmd.register(groups)
    deliveries_cmd.register(groups)
    dkim_cmd.register(groups)
    domains_cmd.register(groups)
    outbox_cmd.register(groups)
    doctor_cmd.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except InputError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``appliance deliveries list | head -1``): stop quietly. Python would
        # flush stdout again at exit and report the same error; point stdout at /dev/null first
        # (the pattern of the Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
