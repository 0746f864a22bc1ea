"""Step 2: which sender rule, if any, covers the From address."""

from __future__ import annotations

__all__ = ["match_sender", "rule_key"]

import idna

from appliance.message import normalize_address
from appliance.policy import MailPolicy, Match


def rule_key(match: Match) -> str:
    """A stable name for a rule, independent of its position (survives policy reloads)."""
    return normalize_address(match.address or match.domain or "")


def match_sender(policy: MailPolicy, address: str) -> int | None:
    """Index of the first rule matching ``address`` (case-insensitive), or None."""
    address = _address(address)
    domain = address.rpartition("@")[2]
    for index, rule in enumerate(policy.senders):
        if _matches(rule.match, address, domain):
            return index
    return None


def _domain(domain: str) -> str:
    """A domain in the form rules and From addresses are compared in.

    Lowercased, without a trailing dot, and in A-labels (IDNA 2008 with UTS 46 mapping), so a
    policy may name ``bücher.de`` for mail from ``xn--bcher-kva.de``.
    """
    domain = domain.strip().lower().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError included: not a valid IDN, compared as written
        return domain


def _address(address: str) -> str:
    local, at, domain = normalize_address(address).rpartition("@")
    return f"{local}{at}{_domain(domain)}" if at else normalize_address(address)


def _matches(match: Match, address: str, domain: str) -> bool:
    if match.address is not None:
        return _address(match.address) == address
    if match.domain is None:
        return False
    wanted = normalize_address(match.domain)
    if wanted.startswith("*."):
        return domain.endswith("." + _domain(wanted[2:]))  # "*.acme.com": subdomains only
    return domain == _domain(wanted)
