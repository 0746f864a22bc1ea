"""Stalwart-like logging: one JSON object per line on stdout, flushed at once."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any

_lock = threading.Lock()


def log(level: str, event: str, message: str, **fields: Any) -> None:
    """Write one log line ``{"timestamp","level","event","message",...}`` and flush it."""
    record = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "event": event,
        "message": message,
        **fields,
    }
    line = json.dumps(record, default=str)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
