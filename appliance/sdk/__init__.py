"""The agent side of the appliance: verify its webhooks, read its events, act through its API.

Verifying a webhook needs only the standard library and msgspec::

    from appliance.sdk import MessageReceived, verify_webhook

    event = verify_webhook(request.headers, await request.body(), os.environ["WEBHOOK_SECRET"])
    if isinstance(event, MessageReceived):
        ...  # event.data.text, event.data.capabilities; deduplicate on the webhook-id header

Acting (``Client``, ``AsyncClient``) needs httpx too, imported when a client is made::

    from appliance.sdk import CapabilityMissing, Client

    with Client("http://127.0.0.1:8025", os.environ["AGENT_API_KEY"]) as client:
        free = client.call_tool("calendar_availability", {"day": "2026-11-26"},
                                capability_token=event.data.capability_token)
        client.reply(event.data, "Thursday at 10:00?")
        for item in client.events():  # or the event stream instead of webhooks
            ...
"""

from appliance.sdk._client import DEFAULT_TIMEOUT, AsyncClient, Client
from appliance.sdk._errors import (
    ApiError,
    CapabilityMissing,
    IdempotencyConflict,
    NotFound,
    PayloadError,
    PolicyRefused,
    RateLimited,
    SdkError,
    TokenInvalid,
    TransportError,
    WebhookError,
    WebhookVerificationError,
)
from appliance.sdk._models import (
    AttachmentContent,
    AttachmentSummary,
    Blob,
    MessageBody,
    MessageSummary,
    RecipientStatus,
    SendResult,
    SentMessage,
    StreamEvent,
    TokenInfo,
    ToolInfo,
    UsageResult,
)
from appliance.sdk._payload import (
    Attachment,
    Auth,
    BouncedRecipient,
    DeliveryFailed,
    DeliveryFailedData,
    EndpointDisabled,
    EndpointDisabledData,
    Event,
    MessageBounced,
    MessageBouncedData,
    MessageData,
    MessageQuarantined,
    MessageReceived,
    MessageSent,
    MessageSentData,
    QuarantineData,
    parse_event,
)
from appliance.sdk._webhooks import SECRET_PREFIX, TOLERANCE, decode_secret, sign, verify_webhook

__all__ = [
    "DEFAULT_TIMEOUT",
    "SECRET_PREFIX",
    "TOLERANCE",
    "ApiError",
    "AsyncClient",
    "Attachment",
    "AttachmentContent",
    "AttachmentSummary",
    "Auth",
    "Blob",
    "BouncedRecipient",
    "CapabilityMissing",
    "Client",
    "DeliveryFailed",
    "DeliveryFailedData",
    "EndpointDisabled",
    "EndpointDisabledData",
    "Event",
    "IdempotencyConflict",
    "MessageBody",
    "MessageBounced",
    "MessageBouncedData",
    "MessageData",
    "MessageQuarantined",
    "MessageReceived",
    "MessageSent",
    "MessageSentData",
    "MessageSummary",
    "NotFound",
    "PayloadError",
    "PolicyRefused",
    "QuarantineData",
    "RateLimited",
    "RecipientStatus",
    "SdkError",
    "SendResult",
    "SentMessage",
    "StreamEvent",
    "TokenInfo",
    "TokenInvalid",
    "ToolInfo",
    "TransportError",
    "UsageResult",
    "WebhookError",
    "WebhookVerificationError",
    "decode_secret",
    "parse_event",
    "sign",
    "verify_webhook",
]
