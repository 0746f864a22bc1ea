"""Signing webhook requests (Standard Webhooks), with the endpoint's current secrets."""

from __future__ import annotations

__all__ = ["load_secrets", "webhook_headers"]

import os
from collections.abc import Mapping

from appliance.sdk import decode_secret, sign


def load_secrets(env_name: str | None, environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The HMAC keys in ``$env_name`` (``whsec_...``, several space-separated during rotation).

    ValueError naming the variable when it is unset, empty or malformed.
    """
    if not env_name:
        raise ValueError("no webhook_secret_env configured for this agent")
    value = (os.environ if environ is None else environ).get(env_name, "")
    if not value.strip():
        raise ValueError(f"webhook secret ${env_name} is not set")
    try:
        return [decode_secret(s) for s in value.split()]
    except ValueError as exc:
        raise ValueError(f"${env_name}: {exc}") from None


def webhook_headers(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for one request: one ``v1`` signature per key."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }
