"""The SDK's exceptions.

    SdkError
    ├── WebhookError
    │   ├── WebhookVerificationError   missing headers, no matching signature, timestamp out of tolerance
    │   └── PayloadError               a verified body that is not an event this SDK knows
    ├── ApiError                       the appliance answered with an error: ``.status``, ``.reason``, ``.detail``
    │   ├── TokenInvalid               401: the API key or the capability token is missing, expired or forged
    │   ├── PolicyRefused              403: the policy does not allow it (``recipient_not_allowed``, a guard...)
    │   │   └── CapabilityMissing      403 ``capability_missing``: the sender's grant lacks that capability
    │   ├── NotFound                   404: no such message, blob or tool (for this agent)
    │   ├── IdempotencyConflict        ``idempotency_conflict``: the key was used for another request (422),
    │   │                              or its first request is still running (409)
    │   └── RateLimited                429: over a rate limit; ``.retry_after`` seconds when the appliance says
    └── TransportError                 no answer: connection refused or reset, timeout
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "CapabilityMissing",
    "IdempotencyConflict",
    "NotFound",
    "PayloadError",
    "PolicyRefused",
    "RateLimited",
    "SdkError",
    "TokenInvalid",
    "TransportError",
    "WebhookError",
    "WebhookVerificationError",
]


class SdkError(Exception):
    """Base of every error the SDK raises."""


class WebhookError(SdkError):
    """A webhook (or a streamed event) that cannot be used."""


class WebhookVerificationError(WebhookError):
    """The request is not a genuine, fresh webhook from the appliance: answer 400 or 401, do not process it."""


class PayloadError(WebhookError):
    """The body is not an event of a known type (or not JSON)."""


class ApiError(SdkError):
    """The appliance refused a request: its HTTP ``status``, its ``reason`` code and the ``detail`` it gave.

    ``reason`` is part of the API (``capability_missing``, ``recipient_not_allowed``...): match on it, not
    on ``detail``, which is for people.
    """

    def __init__(self, status: int, reason: str, detail: str = "", *, retry_after: float | None = None) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        """Seconds to wait before trying again, when the appliance said (``Retry-After``)."""
        super().__init__(f"{status} {reason}: {detail}" if detail else f"{status} {reason}")


class TokenInvalid(ApiError):
    """401: the agent API key, or the capability token, is missing, expired, forged or another agent's."""


class PolicyRefused(ApiError):
    """403: the operator's policy does not let the agent do this; ``reason`` says which rule."""


class CapabilityMissing(PolicyRefused):
    """403 ``capability_missing``: the capability token's grant lacks what the call needs."""


class NotFound(ApiError):
    """404: no such message, blob or tool, or not this agent's."""


class IdempotencyConflict(ApiError):
    """``idempotency_conflict``: 422 when the key was used for another request, 409 while its first one runs."""


class RateLimited(ApiError):
    """429: over a rate limit (``outbound_rate_limited``...); see ``retry_after``."""


class TransportError(SdkError):
    """The appliance could not be reached, or the connection failed before an answer came."""
