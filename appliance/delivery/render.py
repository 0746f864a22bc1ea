"""Turning a stored delivery row into the bytes an agent receives (webhook body, stream ``data``)."""

from __future__ import annotations

__all__ = ["render_event"]

from datetime import datetime

from appliance.delivery.payload import MessageData, encode_event
from appliance.delivery.tokens import TokenIssuer


def render_event(event_type: str, created_at: datetime, payload: str, tokens: TokenIssuer | None,
                 now: float | None = None) -> bytes:
    """The envelope for a row; a ``message.received`` gets a fresh capability token."""

    def token(data: MessageData) -> str:
        assert tokens is not None
        return tokens.issue(agent=data.agent, thread_id=data.thread_id, decision_id=data.decision_id,
                            email_id=data.email_id, capabilities=data.capabilities, now=now)

    return encode_event(event_type, created_at, payload, token if tokens is not None else None)
