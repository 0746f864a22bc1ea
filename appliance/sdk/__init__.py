"""The agent side of the appliance: verify its webhooks and read its events.

Needs only the standard library and msgspec::

    from appliance.sdk import MessageReceived, verify_webhook

    event = verify_webhook(request.headers, await request.body(), os.environ["WEBHOOK_SECRET"])
    if isinstance(event, MessageReceived):
        ...  # event.data.text, event.data.capabilities; deduplicate on the webhook-id header
"""

from appliance.sdk._errors import PayloadError, WebhookError, WebhookVerificationError
from appliance.sdk._payload import (
    Attachment,
    Auth,
    DeliveryFailed,
    DeliveryFailedData,
    EndpointDisabled,
    EndpointDisabledData,
    Event,
    MessageData,
    MessageQuarantined,
    MessageReceived,
    QuarantineData,
    parse_event,
)
from appliance.sdk._webhooks import SECRET_PREFIX, TOLERANCE, decode_secret, sign, verify_webhook

__all__ = [
    "SECRET_PREFIX",
    "TOLERANCE",
    "Attachment",
    "Auth",
    "DeliveryFailed",
    "DeliveryFailedData",
    "EndpointDisabled",
    "EndpointDisabledData",
    "Event",
    "MessageData",
    "MessageQuarantined",
    "MessageReceived",
    "PayloadError",
    "QuarantineData",
    "WebhookError",
    "WebhookVerificationError",
    "decode_secret",
    "parse_event",
    "sign",
    "verify_webhook",
]

