"""``appliance dkim keygen|show``: the signing keys of a domain and the DNS records that publish them.

``keygen`` makes an RSA and an ed25519 key (selectors ``<S>-rsa`` and
``<S>-ed25519``, ``S`` from ``[outbound] dkim_selector`` unless ``--selector``)
in ``data_dir/dkim/<domain>/`` and prints the TXT records to publish. Keys
that exist are kept; when both do, ``--force`` replaces them (a rotation).
``show`` prints the records of the keys that exist. Neither needs the
appliance to be stopped: the keys are files, not database rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.cli import backend
from appliance.mailauth.keys import (
    Algorithm,
    SigningKey,
    ensure_signing_keys,
    key_path,
    load_key_file,
    public_record,
    selectors_for,
)


def register(groups: Any) -> None:
    group = groups.add_parser("dkim", help="DKIM signing keys and their DNS records")
    sub = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keygen = sub.add_parser("keygen", help="make a domain's RSA and ed25519 signing keys, print their DNS records")
    show = sub.add_parser("show", help="print the DNS records of a domain's signing keys")
    for cmd in (keygen, show):
        backend.add_config_argument(cmd)
        cmd.add_argument("--domain", required=True, help="the signing domain (d=), usually the agents' domain")
        cmd.add_argument("--selector", default=None,
                         help="selector stem (default: [outbound] dkim_selector); keys are <stem>-rsa, <stem>-ed25519")
    keygen.add_argument("--force", action="store_true", help="replace keys that exist (rotation)")
    keygen.set_defaults(handler=run_keygen)
    show.set_defaults(handler=run_show)


def _selectors(stem: str) -> dict[str, Algorithm]:
    try:
        return selectors_for(stem)
    except ValueError as exc:
        raise backend.CommandFailed(f"--selector: {exc}") from None


def _path(args: argparse.Namespace, data_dir: Path, selector: str) -> Path:
    try:
        return key_path(data_dir, args.domain, selector)
    except ValueError as exc:
        raise backend.CommandFailed(f"--domain: {exc}") from None


def _load(path: Path) -> SigningKey:
    try:
        return load_key_file(path)
    except (OSError, ValueError) as exc:
        raise backend.CommandFailed(str(exc)) from None


@backend.reports_failures
def run_keygen(args: argparse.Namespace) -> int:
    config = backend.load(args)
    stem = args.selector or config.outbound.dkim_selector
    selectors = _selectors(stem)
    paths = {selector: _path(args, config.data_path, selector) for selector in selectors}
    existing = [s for s, p in paths.items() if p.exists()]
    if len(existing) == len(paths) and not args.force:
        raise backend.CommandFailed(
            f"keys for {args.domain} exist ({', '.join(str(p) for p in paths.values())}); "
            "`appliance dkim show` prints their records, --force replaces them")
    try:
        outcomes = ensure_signing_keys(config.data_path, args.domain, stem, replace=args.force)
    except (OSError, ValueError) as exc:
        raise backend.CommandFailed(str(exc)) from None
    for made in outcomes:
        print(f"{made.outcome} {made.path}", file=sys.stderr)
    if args.force and existing:
        print("mail signed with the replaced keys stops verifying once these records replace the old ones; "
              "a new --selector lets both be published during the change", file=sys.stderr)
    print(f"; publish at {args.domain}'s DNS:")
    for made in outcomes:
        print(public_record(args.domain, made.key).zone_line)
    return 0


@backend.reports_failures
def run_show(args: argparse.Namespace) -> int:
    config = backend.load(args)
    selectors = _selectors(args.selector or config.outbound.dkim_selector)
    found = 0
    for selector in selectors:
        path = _path(args, config.data_path, selector)
        if not path.exists():
            print(f"no key {path}", file=sys.stderr)
            continue
        key = _load(path)
        print(public_record(args.domain, key).zone_line)
        found += 1
    if not found:
        raise backend.CommandFailed(f"no DKIM keys for {args.domain}: `appliance dkim keygen --domain {args.domain}` "
                                    "makes them")
    return 0
