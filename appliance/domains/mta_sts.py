"""The MTA-STS policy the appliance serves for its domains (RFC 8461 3.2), and its id (3.1).

The policy says: mail for the domain goes to the appliance's MX host, over
TLS with a valid certificate (``enforce``), or is only reported when it did
not (``testing``). Its id is derived from its text, so the ``_mta-sts`` TXT
record's ``id=`` changes exactly when the policy does and senders refetch it.
"""

from __future__ import annotations

__all__ = ["MAX_AGE", "policy", "policy_id", "policy_text"]

import base64
import hashlib
from typing import Literal

from appliance.outbound.mtasts import MtaStsPolicy

MAX_AGE = 604_800
"""One week (RFC 8461 3.2 suggests weeks; the limit is about a year): long enough that a sender
remembers the policy across an outage, short enough that a change reaches everyone within days."""


def policy(mode: Literal["testing", "enforce", "none"], mx_host: str, *, max_age: int = MAX_AGE) -> MtaStsPolicy:
    """The policy naming ``mx_host`` (the appliance's hostname) as the domain's one MX."""
    return MtaStsPolicy(mode=mode, mx=[mx_host.strip().rstrip(".").lower()], max_age=max_age)


def policy_text(value: MtaStsPolicy) -> str:
    """The body of ``/.well-known/mta-sts.txt``: ``key: value`` lines ending in CRLF (RFC 8461 3.2)."""
    lines = ["version: STSv1", f"mode: {value.mode}", *(f"mx: {mx}" for mx in value.mx), f"max_age: {value.max_age}"]
    return "".join(f"{line}\r\n" for line in lines)


def policy_id(value: MtaStsPolicy) -> str:
    """The policy's id: 20 base32 characters of the SHA-256 of its text (RFC 8461 3.1 allows 1-32
    letters and digits)."""
    digest = hashlib.sha256(policy_text(value).encode("ascii")).digest()
    return base64.b32encode(digest).decode("ascii")[:20]
