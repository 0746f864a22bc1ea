"""How large a request body may be: small JSON everywhere, a whole message where one is carried."""

from __future__ import annotations

__all__ = ["JSON_BODY_LIMIT", "message_body_limit"]

from appliance.config import ApplianceConfig

JSON_BODY_LIMIT = 64 * 1024
"""Bytes of a request body at most, on every route that carries no message (admin and agent JSON is small)."""


def message_body_limit(config: ApplianceConfig) -> int:
    """Bytes of a body that carries a whole message as a JSON string (the MTA hook, a send): escapes may
    double the message, plus room for the envelope or the other fields."""
    return config.smtp.max_message_size * 2 + 1_000_000
