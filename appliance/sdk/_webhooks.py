"""Standard Webhooks signatures: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.

See https://www.standardwebhooks.com/ (the ``webhook-id``, ``webhook-timestamp``
and ``webhook-signature`` headers; ``whsec_`` secrets; several signatures,
space-separated, while a secret is rotated).
"""

from __future__ import annotations

__all__ = ["SECRET_PREFIX", "TOLERANCE", "decode_secret", "sign", "verify_webhook"]

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

from appliance.sdk._errors import WebhookVerificationError
from appliance.sdk._payload import Event, parse_event

SECRET_PREFIX = "whsec_"
TOLERANCE = 300
"""Seconds a ``webhook-timestamp`` may be away from now (replay protection)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); ValueError when malformed."""
    body = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not whsec_ followed by base64") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``, for ``body`` sent as ``msg_id`` at ``timestamp`` (unix seconds)."""
    key = secret if isinstance(secret, bytes) else decode_secret(secret)
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def _secrets(secret: str | Iterable[str]) -> list[bytes]:
    values = secret.split() if isinstance(secret, str) else [s for item in secret for s in item.split()]
    if not values:
        raise ValueError("no webhook secret given")
    return [decode_secret(v) for v in values]


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str | Iterable[str], *,
                   tolerance: int = TOLERANCE, now: float | None = None) -> Event:
    """Check a webhook request and return its typed event.

    Args:
        headers: the request's headers (any case).
        body: the raw request body, exactly as received (not re-encoded JSON).
        secret: the endpoint's ``whsec_...`` secret; several (a list, or space-separated) during rotation.
        tolerance: seconds the ``webhook-timestamp`` may differ from ``now``.
        now: the current unix time (tests).

    Raises:
        WebhookVerificationError: a header is missing, no signature matches, or the timestamp is too old or new.
        PayloadError: the body is genuine but not an event this SDK knows.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not unix seconds: {stamp!r}") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("webhook-timestamp too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("webhook-timestamp too new")
    raw = body.encode() if isinstance(body, str) else body
    expected = [sign(key, msg_id, timestamp, raw).encode() for key in _secrets(secret)]
    for candidate in signatures.split():
        version, _, _ = candidate.partition(",")
        if version != "v1":
            continue
        given = candidate.encode()
        if any(hmac.compare_digest(given, e) for e in expected):
            return parse_event(raw)
    raise WebhookVerificationError("no matching signature")
