"""Push: EventSource subscribers per account, woken on every state change of that account."""

from __future__ import annotations

import queue
import threading


class Hub:
    """Fan-out of account state changes to open EventSource streams."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[queue.Queue[str]]] = {}

    def subscribe(self, account_id: str) -> queue.Queue[str]:
        """A queue that receives the account id on each change of that account."""
        inbox: queue.Queue[str] = queue.Queue()
        with self._lock:
            self._subscribers.setdefault(account_id, []).append(inbox)
        return inbox

    def unsubscribe(self, account_id: str, inbox: queue.Queue[str]) -> None:
        """Stop delivering to ``inbox``."""
        with self._lock:
            queues = self._subscribers.get(account_id, [])
            if inbox in queues:
                queues.remove(inbox)

    def notify(self, account_id: str) -> None:
        """Wake every stream of ``account_id``."""
        with self._lock:
            queues = list(self._subscribers.get(account_id, []))
        for inbox in queues:
            inbox.put(account_id)
