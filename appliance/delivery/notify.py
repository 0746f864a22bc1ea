"""A wake-up call many waiters can await: "new deliveries are committed"."""

from __future__ import annotations

__all__ = ["Broadcast"]

import asyncio
import contextlib


class Broadcast:
    """Each ``notify`` wakes every waiter that took a ticket before it.

    Take the ticket *before* looking for work, then wait on it: a notification
    that lands between the look and the wait is not lost.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, within: float) -> bool:
        """True when notified, False after ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), within)
            return True
        return False
