"""The CPU-heavy half of the gate's fact-finding, in one pure function that a reader process can run.

Parsing, MIME decoding, HTML reduction and the content guards' scan cost time
in proportion to the message (and, on hostile shapes, more). ``inspect_message``
does all of it from the bytes and the policy's guards alone, so the intake can
run it in a reader process with a deadline, on another core, while the event
loop only waits; ``evaluate`` then decides on the Inspection as it would on a
scan of its own (``Facts.guard_hit``).
"""

from __future__ import annotations

__all__ = ["GuardSpec", "Inspection", "InspectionRequest", "guard_specs", "inspect_message", "inspect_request"]

import functools
import re
from collections.abc import Sequence

import msgspec

from appliance.guards import GuardHit, scan
from appliance.mail import MessageBytes, ParsedMessage, ReadableText, ReadingLimits, Unreadable, read_for_gate
from appliance.policy import ContentGuard


class GuardSpec(msgspec.Struct, frozen=True, array_like=True):
    """A content guard as it crosses to a reader process: its pattern's source and flags, its reason."""

    pattern: str
    flags: int
    reason: str


class InspectionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a reader process is asked: the message's bytes (as read once) and the guards to scan with."""

    data: bytes
    guards: list[GuardSpec] = msgspec.field(default_factory=list)


class Inspection(msgspec.Struct, frozen=True, kw_only=True):
    """The parse, the readable text and the guards' verdict; ``unreadable`` instead when reading failed."""

    parsed: ParsedMessage | None = None
    readable: ReadableText | None = None
    unreadable: Unreadable | None = None
    scanned: bool = False
    """The guards ran (``guard_hit`` is their verdict); False when there were none or no text to scan."""
    guard_hit: GuardHit | None = None


def guard_specs(guards: Sequence[ContentGuard]) -> list[GuardSpec]:
    """The policy's guards in the form a reader process receives."""
    return [GuardSpec(g.reject.pattern, g.reject.flags, g.reason) for g in guards]


@functools.lru_cache(maxsize=256)
def _compiled(spec: GuardSpec) -> ContentGuard:
    return ContentGuard(reject=re.compile(spec.pattern, spec.flags), reason=spec.reason)


def inspect_message(message: MessageBytes | bytes, limits: ReadingLimits | None = None,
                    guards: Sequence[ContentGuard] = ()) -> Inspection:
    """Read ``message`` for the gate and scan it with ``guards``; never raises for what it holds."""
    reading = read_for_gate(message, limits)
    readable = reading.readable
    # Truncated text is refused by the gate unscanned (what was cut could not be seen).
    scanned = bool(guards) and readable is not None and not readable.truncated
    hit = scan(readable, guards) if scanned and readable is not None else None
    return Inspection(parsed=reading.parsed, readable=readable, unreadable=reading.unreadable, scanned=scanned,
                      guard_hit=hit)


def inspect_request(request: InspectionRequest, limits: ReadingLimits) -> Inspection:
    """``inspect_message`` for a request that crossed to a reader process."""
    return inspect_message(request.data, limits, [_compiled(spec) for spec in request.guards])
