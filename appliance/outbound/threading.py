"""How a reply joins its conversation: who it goes to, its Subject, In-Reply-To and References.

Pure functions over the parent's parsed headers (RFC 5322 3.6.4, 3.6.5).
"""

from __future__ import annotations

__all__ = [
    "MAX_REFERENCES",
    "message_ids",
    "references_for_reply",
    "reply_subject",
    "reply_target",
]

import email.utils
import re

from appliance.mail import ascii_address
from appliance.mailauth.dmarc import organizational_domain

MAX_REFERENCES = 20
"""References keeps the thread's first id and this many of the latest (RFC 5322 3.6.4 lets a writer
trim the list; the first id anchors the thread for every reader, the latest keep its recent order)."""

_MSG_ID = re.compile(r"<[!-;=?-~]{1,250}>")
"""An msg-id as we write it: ``<`` printable ASCII without ``<``, ``>`` or white space ``>``, short
enough that a References line folded between ids stays far under 998 octets."""
_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|aw|sv|vs|antw)\s*(?:\[\d+\]|\(\d+\))?\s*[:：])+\s*", re.IGNORECASE)
"""Reply prefixes of common mail clients: Re (and RE, re, Re[2], Re(2)), AW (German), SV (Nordic),
VS (Finnish), Antw (Dutch). Forward prefixes stay: "Re: Fwd: x" is the reply to a forward."""


def message_ids(value: str | None) -> list[str]:
    """The msg-ids in a References or In-Reply-To value, in order; anything else (phrases,
    comments, ids with white space or 8-bit characters) is left out."""
    return _MSG_ID.findall(value) if value else []


def references_for_reply(parent_message_id: str | None, parent_references: list[str],
                         parent_in_reply_to: str | None = None) -> list[str]:
    """RFC 5322 3.6.4: the parent's References (else its In-Reply-To), then the parent's Message-ID.

    Bounded to the first id and the last ``MAX_REFERENCES``; duplicates kept once (first place).
    """
    chain = [i for v in parent_references for i in message_ids(v)]
    if not chain:
        chain = message_ids(parent_in_reply_to)[:1]
    chain += message_ids(parent_message_id)[:1]
    chain = list(dict.fromkeys(chain))
    if len(chain) > MAX_REFERENCES + 1:
        chain = [chain[0], *chain[-MAX_REFERENCES:]]
    return chain


def reply_subject(parent_subject: str) -> str:
    """``Re: `` and the parent's subject without its reply prefixes, so a reply says "Re:" once
    (RFC 5322 3.6.5); white space (folds, tabs, line breaks) collapsed to one space."""
    subject = " ".join(parent_subject.split())
    return "Re: " + _REPLY_PREFIX.sub("", subject) if subject else "Re:"


def _one_address(value: str | None) -> str | None:
    """The addr-spec of a header value holding exactly one mailbox, else None."""
    if not value or "\r" in value or "\n" in value:
        return None
    found = email.utils.getaddresses([value])
    if len(found) != 1:
        return None
    address = found[0][1]
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address):
        return None
    return address


def reply_target(parent_from: str, parent_reply_to: str | None) -> str:
    """Where a reply goes: the parent's verified From, or its Reply-To when that aligns with it.

    Reply-To is anyone's to write. Only a Reply-To in the same organizational
    domain as the verified From (DMARC's relaxed alignment, RFC 7489 3.1) is
    honoured, so a forged message's ``Reply-To: attacker@evil.example`` cannot
    steer the agent's answer; ``support@acme.com`` for ``noreply@mail.acme.com``
    can. A Reply-To with several (or no) mailboxes is not followed.
    """
    sender = _one_address(parent_from) or parent_from.strip()
    target = _one_address(parent_reply_to)
    if target is None:
        return sender
    from_domain = ascii_address(sender).rpartition("@")[2]
    reply_domain = ascii_address(target).rpartition("@")[2]
    if from_domain and organizational_domain(reply_domain) == organizational_domain(from_domain):
        return target
    return sender
