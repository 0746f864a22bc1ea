"""Step 2: which sender rule, if any, covers the From address."""

from __future__ import annotations

__all__ = ["match_sender", "rule_key"]

from appliance.mail import ascii_address, ascii_domain, normalize_address
from appliance.policy import MailPolicy, Match


def rule_key(match: Match) -> str:
    """A stable name for a rule, independent of its position (survives policy reloads)."""
    return normalize_address(match.address or match.domain or "")


def match_sender(policy: MailPolicy, address: str) -> int | None:
    """Index of the first rule matching ``address`` (case-insensitive), or None."""
    address = ascii_address(address)
    domain = address.rpartition("@")[2]
    for index, rule in enumerate(policy.senders):
        if _matches(rule.match, address, domain):
            return index
    return None


def _matches(match: Match, address: str, domain: str) -> bool:
    if match.address is not None:
        return ascii_address(match.address) == address
    if match.domain is None:
        return False
    wanted = normalize_address(match.domain)
    if wanted.startswith("*."):
        return domain.endswith("." + ascii_domain(wanted[2:]))  # "*.acme.com": subdomains only
    return domain == ascii_domain(wanted)
