"""Content guards (gate step 4) over the normalized readable text of a message.

Each guard's pattern is searched in each scanned text: one pass per pattern
and text. Joining a policy's patterns into one alternation was measured on
1 MB of text and rejected: CPython's backtracking engine tries every branch at
every position and loses each pattern's own prefix scan, so the alternation
was 5-30 % slower than separate searches, for 1 to 32 guards alike.
"""

from __future__ import annotations

__all__ = ["GuardHit", "scan", "scanned_parts"]

import re
from collections.abc import Sequence

import msgspec

from appliance.guards.normalize import normalized_forms
from appliance.mail.text import ReadableText, TextPart
from appliance.policy.model import ContentGuard

EXCERPT_CONTEXT = 40
"""Characters of normalized text kept on each side of a match in ``GuardHit.excerpt``."""
EXCERPT_MATCH = 80
"""Longest stretch of the match itself kept in the excerpt."""

_BODY = re.compile(r"body\[\d+\] text/[^ ]+")


class GuardHit(msgspec.Struct, frozen=True, kw_only=True):
    """The first content guard that matched, and where."""

    guard_index: int
    """Index into the policy's ``contentGuards``."""
    reason: str
    pattern: str
    where: str
    """The part that matched (``TextPart.where``, plus the form when not the main one)."""
    excerpt: str
    """A short window of the normalized text around the match."""


def scanned_parts(readable: ReadableText) -> list[TextPart]:
    """The texts guards are matched against: every part in each normalized form.

    Besides each part, the inline body parts of the message joined in order
    (when there are several), as a mail client shows them one after the other.
    """
    sources = list(readable.parts)
    bodies = [p.text for p in readable.parts if _BODY.fullmatch(p.where)]
    if len(bodies) > 1:
        sources.append(TextPart(where="body (inline parts joined)", text="\n".join(bodies)))
    scanned: list[TextPart] = []
    for part in sources:
        for label, text in normalized_forms(part.text):
            if text:
                where = f"{part.where} ({label})" if label else part.where
                scanned.append(TextPart(where=where, text=text))
    return scanned


def _excerpt(text: str, match: re.Match[str]) -> str:
    start, end = match.span()
    shown_end = min(end, start + EXCERPT_MATCH)
    lo = max(0, start - EXCERPT_CONTEXT)
    hi = min(len(text), shown_end + EXCERPT_CONTEXT) if shown_end == end else shown_end
    excerpt = text[lo:hi]
    if lo > 0:
        excerpt = "…" + excerpt
    if hi < len(text):
        excerpt += "…"
    return excerpt


def scan(readable: ReadableText, guards: Sequence[ContentGuard]) -> GuardHit | None:
    """The first guard, in policy order, whose pattern is found in any scanned part."""
    if not guards:
        return None
    parts = scanned_parts(readable)
    for index, guard in enumerate(guards):
        for part in parts:
            match = guard.reject.search(part.text)
            if match is not None:
                return GuardHit(
                    guard_index=index,
                    reason=guard.reason,
                    pattern=guard.reject.pattern,
                    where=part.where,
                    excerpt=_excerpt(part.text, match),
                )
    return None
