"""Content guards (gate step 4) over the normalized readable text of a message.

The policy's patterns are joined into one alternation, compiled once per
policy, so a message costs one regex pass per scanned text whatever the number
of guards; a pattern that cannot be joined without changing its meaning
(backreferences, named groups, conditionals) is searched on its own. Only
when something matched are the guards tried one by one, to report the first
in policy order, as before.
"""

from __future__ import annotations

__all__ = ["GuardHit", "scan", "scanned_parts"]

import functools
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


# -- one alternation for a policy ------------------------------------------------------------------

_LEADING_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")
_UNJOINABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|\\g<")
"""Backreferences and conditionals: their group numbers would change inside an alternation."""
_SCOPED = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"), (re.ASCII, "a"))


def _scoped(pattern: re.Pattern[str]) -> str | None:
    """``pattern`` as a group that carries its own flags, or None when it cannot be joined."""
    source = pattern.pattern
    if pattern.groupindex or _UNJOINABLE.search(source) or pattern.flags & re.LOCALE:
        return None
    while match := _LEADING_FLAGS.match(source):
        source = source[match.end():]
    letters = "".join(letter for flag, letter in _SCOPED if pattern.flags & flag)
    # A newline ends a verbose-mode comment before the closing parenthesis.
    tail = "\n" if pattern.flags & re.VERBOSE else ""
    return f"(?{letters}:{source}{tail})" if letters else f"(?:{source}{tail})"


class _Matcher:
    """Finds whether any of a policy's patterns occurs in a text, in one pass when possible."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        joinable = [(i, s) for i, p in enumerate(patterns) if (s := _scoped(p)) is not None]
        joined = {i for i, _ in joinable}
        self.alone = [p for i, p in enumerate(patterns) if i not in joined]
        self.joined: re.Pattern[str] | None = None
        if len(joinable) == 1:
            self.joined = patterns[joinable[0][0]]
        elif joinable:
            try:
                self.joined = re.compile("|".join(s for _, s in joinable))
            except (re.error, OverflowError, RecursionError):
                self.alone = list(patterns)

    def found_in(self, text: str) -> bool:
        if self.joined is not None and self.joined.search(text) is not None:
            return True
        return any(p.search(text) is not None for p in self.alone)


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[re.Pattern[str], ...]) -> _Matcher:
    return _Matcher(patterns)


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
    matcher = _matcher(tuple(guard.reject for guard in guards))
    if not any(matcher.found_in(part.text) for part in parts):
        return None
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
