"""Rate limits and token budgets: sliding windows over recorded events.

The gate only reads counts through ``LimitCounter``; the shell records a
decision's ``LimitCharge`` when it commits the decision. Windows slide: a
per-hour limit counts the events of the last 3600 seconds, not since the top
of the hour. A thread budget counts every token ever charged to the thread.
"""

from __future__ import annotations

__all__ = ["DAY", "HOUR", "MINUTE", "InMemoryLimits", "LimitCounter", "day_key", "rate_key", "thread_key"]

import bisect
import contextlib
from collections import defaultdict, deque
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
    """LimitCounter kept in memory: for `policy explain`, tests, and as the running appliance's cache.

    Event times are kept for the last day only (the longest window); token
    totals are kept forever, for lifetime (per-thread) budgets.
    """

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._totals: dict[str, int] = defaultdict(int)

    def count_since(self, key: str, since: float) -> int:
        times = self._times.get(key)
        if not times:
            return 0
        return len(times) - bisect.bisect_left(times, since)

    def tokens_since(self, key: str, since: float) -> int:
        if since <= 0:
            return self._totals.get(key, 0)
        return sum(n for t, n in self._tokens.get(key, ()) if t >= since)

    def record(self, charge: LimitCharge, now: float) -> None:
        """Count a committed decision."""
        for key in charge.rate_keys:
            self.add_event(key, now)
        for key in charge.token_keys:
            self.add_tokens(key, charge.tokens, now)

    def withdraw(self, charge: LimitCharge, now: float) -> None:
        """Undo ``record(charge, now)``: its decision was never committed, so it never happened."""
        for key in charge.rate_keys:
            times = self._times.get(key)
            if times is not None:
                with contextlib.suppress(ValueError):
                    times.remove(now)
        for key in charge.token_keys:
            self._totals[key] -= charge.tokens
            window = self._tokens.get(key)
            if window is not None:
                with contextlib.suppress(ValueError):
                    window.remove((now, charge.tokens))

    def add_event(self, key: str, at: float) -> None:
        times = self._times[key]
        if times and at < times[-1]:
            bisect.insort(times, at)
        else:
            times.append(at)
        while times and times[0] < at - DAY:
            times.popleft()

    def add_tokens(self, key: str, tokens: int, at: float) -> None:
        """Charge tokens (a decision's estimate, or usage an agent reported)."""
        self._totals[key] += tokens
        window = self._tokens[key]
        window.append((at, tokens))
        while window and window[0][0] < at - DAY:
            window.popleft()
