"""Trace headers: the one rule for forged ones, and the ones the appliance adds.

RFC 8601 section 5: a receiver removes Authentication-Results that bear its
own authserv-id before adding its own, so the agent can trust what it sees.
X-Appliance-Decision is only ever written by the appliance. Both intakes (the
stored copy of the embedded SMTP server, the Stalwart hook's modifications)
ask ``is_forged`` about each field.
"""

from __future__ import annotations

__all__ = ["DECISION_HEADER", "decision_id_of", "is_forged", "trace_fields", "without_forged_trace"]

import re

from appliance.mail.wire import MessageBytes

DECISION_HEADER = "X-Appliance-Decision"
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 2.2), lowercased.

    Comments (CFWS) may stand anywhere, folded lines are joined; the id is the
    first token before the optional version and the first ``;``.
    """
    text = _FOLD.sub("", value)
    previous = None
    while previous != text:  # nested comments, innermost first
        previous, text = text, _COMMENT.sub(" ", text)
    words = text.partition(";")[0].split()
    return words[0].strip('"').lower().rstrip(".") if words else ""


def is_forged(name: str, value: str, authserv: str) -> bool:
    """Whether a received header field claims to come from the appliance ``authserv``."""
    key = name.strip().lower()
    if key == DECISION_HEADER.lower():
        return True
    return key == "authentication-results" and authserv_id(value) == authserv.lower().rstrip(".")


def without_forged_trace(message: MessageBytes, authserv: str) -> bytes:
    """The message's bytes without the fields ``is_forged`` names; other bytes exactly as they were."""
    forged = [f for f in message.fields if is_forged(f.name, f.value.decode("utf-8", "replace"), authserv)]
    if not forged:
        return message.data
    drop = {f.start for f in forged}
    kept = b"".join(message.data[f.start:f.end] for f in message.fields if f.start not in drop)
    first = message.fields[0].start
    last = message.fields[-1].end
    return message.data[:first] + kept + message.data[last:]


def trace_fields(*, authserv: str, spf: str, dkim: str, dmarc: str, decision_id: str, action: str,
                 reason: str | None) -> bytes:
    """Our Authentication-Results (RFC 8601) and X-Appliance-Decision, ready to prepend."""
    results = (f"Authentication-Results: {authserv};\r\n"
               f"\tspf={spf}; dkim={dkim}; dmarc={dmarc}\r\n")
    verdict = f"{DECISION_HEADER}: {decision_id}; action={action}"
    if reason:
        verdict += f"; reason={reason}"
    return (results + verdict + "\r\n").encode("ascii", "replace")


def decision_id_of(value: object) -> str | None:
    """The decision id of an ``X-Appliance-Decision`` value (``<id>; action=...``, as ``trace_fields`` writes)."""
    if not isinstance(value, str):
        return None
    found = value.strip().partition(";")[0].strip()
    return found or None
