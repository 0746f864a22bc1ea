"""When to try a webhook again: the Standard Webhooks schedule, jitter, ``Retry-After``."""

from __future__ import annotations

__all__ = ["STANDARD_DELAYS", "RetrySchedule", "parse_retry_after"]

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

STANDARD_DELAYS: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
"""Seconds before attempts 1..10: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h."""


@dataclass(frozen=True)
class RetrySchedule:
    """Delays before each attempt; past the last one a delivery is dead."""

    delays: tuple[float, ...] = STANDARD_DELAYS
    """Seconds before attempt ``i + 1`` (the first is normally 0: sent as soon as queued)."""
    jitter: float = 0.1
    """Each delay is stretched or shrunk by up to this fraction, so retries do not come in waves."""
    max_retry_after: float = 86400.0
    """A ``Retry-After`` longer than this is cut to it."""
    rng: Callable[[], float] = field(default=random.random, compare=False)

    @property
    def max_attempts(self) -> int:
        return len(self.delays)

    def next_delay(self, attempts: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after ``attempts`` failed attempts; None when the delivery is dead.

        ``retry_after`` (from the endpoint) is honoured: the delay is never shorter.
        """
        if attempts >= len(self.delays):
            return None
        base = self.delays[attempts]
        delay = base * (1 + self.jitter * (2 * self.rng() - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return max(delay, 0.0)

    def scaled(self, factor: float) -> RetrySchedule:
        """The same schedule, every delay multiplied by ``factor`` (tests)."""
        return RetrySchedule(delays=tuple(d * factor for d in self.delays), jitter=self.jitter,
                             max_retry_after=self.max_retry_after, rng=self.rng)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 10.2.3: delay-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(moment.timestamp() - now, 0.0)
