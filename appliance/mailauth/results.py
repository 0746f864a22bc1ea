"""Verified facts about who sent a message: the results the gate decides on."""

from __future__ import annotations

__all__ = ["AuthResults", "DkimResult", "DmarcResult", "SpfResult", "Verdict"]

from typing import Literal

import msgspec

Verdict = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"]
"""RFC 8601 result words (``policy`` is DKIM's "signature valid but not acceptable")."""


class DkimResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of verifying one DKIM-Signature header."""

    result: Verdict
    domain: str
    """The signing domain, ``d=`` (lowercased)."""
    selector: str
    """``s=``."""
    algorithm: str = ""
    """``a=``, e.g. ``rsa-sha256`` or ``ed25519-sha256``."""
    covers_whole_body: bool = True
    """False when ``l=`` leaves part of the body unsigned.

    Such a signature vouches for nothing after the signed part.
    """
    detail: str = ""


class SpfResult(msgspec.Struct, frozen=True, kw_only=True):
    """The SPF outcome (RFC 7208) for the identity that was checked."""

    result: Verdict
    domain: str
    """The domain checked: MAIL FROM's, or HELO's when MAIL FROM is null."""
    identity: Literal["mailfrom", "helo"] = "mailfrom"
    detail: str = ""


class DmarcResult(msgspec.Struct, frozen=True, kw_only=True):
    """The DMARC outcome (RFC 7489) for the RFC 5322 From domain."""

    result: Verdict
    """pass, fail, none (no record), temperror or permerror."""
    domain: str
    """The From domain."""
    org_domain: str = ""
    """Its organizational domain from the Public Suffix List."""
    policy: Literal["none", "quarantine", "reject"] | None = None
    """The requested policy (``sp=`` for a subdomain when given), None without a record."""
    adkim: Literal["r", "s"] = "r"
    aspf: Literal["r", "s"] = "r"
    dkim_aligned: bool = False
    """A passing whole-body DKIM signature is aligned with the From domain under ``adkim``."""
    spf_aligned: bool = False
    """SPF passed for a MAIL FROM domain aligned with the From domain under ``aspf``."""
    detail: str = ""


class AuthResults(msgspec.Struct, frozen=True, kw_only=True):
    """Everything mail authentication established about one message."""

    spf: SpfResult
    dkim: list[DkimResult]
    dmarc: DmarcResult

    @property
    def dkim_summary(self) -> Verdict:
        """One word for all signatures: pass if any passed, else the most telling failure."""
        if not self.dkim:
            return "none"
        words = [d.result for d in self.dkim]
        for word in ("pass", "temperror", "fail", "permerror", "policy", "neutral"):
            if word in words:
                return word
        return words[0]
