"""Rate limits and token budgets: sliding windows over recorded events.

The gate only reads counts through ``LimitCounter``; the shell records a
decision's ``LimitCharge`` when it commits the decision. Windows slide: a
per-hour limit counts the events of the last 3600 seconds, not since the top
of the hour. A thread budget counts every token ever charged to the thread.
"""

from __future__ import annotations

__all__ = ["DAY", "HOUR", "MINUTE", "InMemoryLimits", "LimitCounter", "day_key", "rate_key", "thread_key"]

import bisect
from collections import defaultdict
from typing import Protocol

from appliance.gate.decision import LimitCharge

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


class LimitCounter(Protocol):
    """Read access to recorded events; the gate's only view of limit state."""

    def count_since(self, key: str, since: float) -> int:
        """Events recorded under ``key`` at or after ``since``."""
        ...

    def tokens_since(self, key: str, since: float) -> int:
        """Tokens charged under ``key`` at or after ``since``."""
        ...


def rate_key(agent: str, rule_key: str) -> str:
    """Messages from one sender rule to one agent."""
    return f"rate|{agent}|{rule_key}"


def thread_key(agent: str, thread_id: str) -> str:
    """Tokens spent on one thread of one agent."""
    return f"thread|{agent}|{thread_id}"


def day_key(agent: str, rule_key: str) -> str:
    """Tokens spent by one agent on one sender rule (read over the last 24 hours)."""
    return f"day|{agent}|{rule_key}"


class InMemoryLimits:
    """LimitCounter kept in memory: for `policy explain`, tests and the bench's gate-only figure."""

    def __init__(self) -> None:
        self._times: dict[str, list[float]] = defaultdict(list)
        self._tokens: dict[str, list[tuple[float, int]]] = defaultdict(list)

    def count_since(self, key: str, since: float) -> int:
        times = self._times.get(key, [])
        return len(times) - bisect.bisect_left(times, since)

    def tokens_since(self, key: str, since: float) -> int:
        return sum(n for t, n in self._tokens.get(key, []) if t >= since)

    def record(self, charge: LimitCharge, now: float) -> None:
        """Count a committed decision."""
        for key in charge.rate_keys:
            bisect.insort(self._times[key], now)
        for key in charge.token_keys:
            self._tokens[key].append((now, charge.tokens))

    def add_tokens(self, key: str, tokens: int, now: float) -> None:
        """Charge usage an agent reported."""
        self._tokens[key].append((now, tokens))
