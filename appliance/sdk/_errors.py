"""The SDK's exceptions.

    WebhookError
    ├── WebhookVerificationError   missing headers, no matching signature, timestamp out of tolerance
    └── PayloadError               a verified body that is not an event this SDK knows
"""

from __future__ import annotations

__all__ = ["PayloadError", "WebhookError", "WebhookVerificationError"]


class WebhookError(Exception):
    """Base of every error the SDK raises."""


class WebhookVerificationError(WebhookError):
    """The request is not a genuine, fresh webhook from the appliance: answer 400 or 401, do not process it."""


class PayloadError(WebhookError):
    """The body is not an event of a known type (or not JSON)."""
