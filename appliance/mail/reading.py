"""What the gate reads of a message: the strict parse and the readable text, or why there is none.

``read_for_gate`` is the CPU-heavy half of the gate's fact-finding (the email
package's parser, MIME decoding, HTML reduction). It is pure, and its result
is a plain Struct, so it can run in this process (``policy explain``, tests)
or in a reader process with a deadline (``mail.readers``) with the same
outcome.
"""

from __future__ import annotations

__all__ = ["Reading", "Unreadable", "read_for_gate", "unreadable_from"]

from typing import Literal

import msgspec

from appliance.errors import MalformedMessage, MessageTooComplex, MessageTooLarge
from appliance.mail.parse import ParsedMessage, parse_tree
from appliance.mail.text import ReadableText, extract_readable
from appliance.mail.wire import MessageBytes, ReadingLimits, read_message

UnreadableReason = Literal["malformed_message", "message_too_large", "message_too_complex"]


class Unreadable(msgspec.Struct, frozen=True, kw_only=True):
    """Why a message was not read far enough to be judged on its content."""

    reason: UnreadableReason
    detail: str
    """What is wrong, for the audit row and the SMTP reply (e.g. "bare CR at byte 120")."""


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """The parse and the readable text of one message; ``unreadable`` instead when either failed."""

    parsed: ParsedMessage | None = None
    readable: ReadableText | None = None
    unreadable: Unreadable | None = None


def unreadable_from(exc: Exception) -> Unreadable | None:
    """The Unreadable an exception of the reading stands for, or None for any other exception."""
    if isinstance(exc, MalformedMessage):
        return Unreadable(reason="malformed_message", detail=str(exc))
    if isinstance(exc, MessageTooLarge):
        return Unreadable(reason="message_too_large", detail=str(exc))
    if isinstance(exc, MessageTooComplex):
        return Unreadable(reason="message_too_complex", detail=str(exc))
    return None


def read_for_gate(message: MessageBytes | bytes, limits: ReadingLimits | None = None) -> Reading:
    """Parse strictly and extract the readable text; never raises for what the message holds."""
    try:
        limits = limits or ReadingLimits()
        if not isinstance(message, MessageBytes):
            message = read_message(message, limits)
        parsed, tree = parse_tree(message)
        return Reading(parsed=parsed, readable=extract_readable(tree, max_parts=limits.max_parts,
                                                                max_depth=limits.max_depth))
    except (MalformedMessage, MessageTooLarge, MessageTooComplex) as exc:
        return Reading(unreadable=unreadable_from(exc))
    except RecursionError:
        return Reading(unreadable=Unreadable(reason="message_too_complex", detail="MIME structure nested too deeply"))
