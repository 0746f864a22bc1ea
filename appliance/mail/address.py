"""The one form addresses and domains are compared in: lowercased, domains in A-labels.

IDNA 2008 with UTS 46 mapping (the ``idna`` package; Python's own codec is
IDNA 2003 and maps ``straße.de`` to ``strasse.de``), without a trailing dot,
so a policy naming ``bücher.de`` matches mail from ``xn--bcher-kva.de`` and
the reverse, and DMARC aligns the same names DNS is asked about.
"""

from __future__ import annotations

__all__ = ["ascii_address", "ascii_domain", "normalize_address"]

import idna


def normalize_address(address: str) -> str:
    """The form addresses are compared in: trimmed and lowercased."""
    return address.strip().lower()


def ascii_domain(domain: str, *, strict: bool = False) -> str:
    """``domain`` lowercased, without a trailing dot, in A-labels.

    A name that is not a valid IDN is returned as written (lowercased), or with
    ``strict`` raises ValueError saying why.
    """
    domain = domain.strip().lower().rstrip(".")
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError as exc:  # idna.IDNAError included
        if strict:
            raise ValueError(str(exc) or "not a valid IDNA 2008 name") from exc
        return domain


def ascii_address(address: str) -> str:
    """An address in the compared form: lowercased, its domain in A-labels."""
    local, at, domain = normalize_address(address).rpartition("@")
    return f"{local}{at}{ascii_domain(domain)}" if at else normalize_address(address)
