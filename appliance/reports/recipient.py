"""Which recipient is the DMARC report address: the one rule both intakes (embedded SMTP, Stalwart's hook) follow."""

from __future__ import annotations

__all__ = ["is_report_recipient", "report_recipient"]

from appliance.config import ApplianceConfig


def report_recipient(domain: str, config: ApplianceConfig) -> str:
    """The ``rua`` address of ``domain``: ``<domains.report_local_part>@<domain>``."""
    return f"{config.domains.report_local_part}@{domain.strip().rstrip('.').lower()}"


def is_report_recipient(address: str, config: ApplianceConfig) -> bool:
    """Whether mail to ``address`` is a DMARC aggregate report for us, not mail for an agent.

    That is ``<domains.report_local_part>@<d>`` for ``d`` the domain of a configured agent (the
    domains our manifest publishes ``rua`` for) and not itself an agent's address; the local part and
    domain compare case-insensitively.
    """
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or local.lower() != config.domains.report_local_part.lower():
        return False
    domain = domain.rstrip(".").lower()
    if config.agent(f"{local}@{domain}") is not None:  # an agent named so keeps its mail
        return False
    return any(agent.address.rpartition("@")[2].lower() == domain for agent in config.agents)
