"""The send half: what an agent may send, composed, signed, queued and delivered."""

from appliance.outbound.model import (
    BlobRef,
    Delivery,
    DeliveryOutcome,
    OutboundMessage,
    SendDecision,
    SendFacts,
    SendKind,
    SendRequest,
    SendResult,
)

__all__ = [
    "BlobRef",
    "Delivery",
    "DeliveryOutcome",
    "OutboundMessage",
    "SendDecision",
    "SendFacts",
    "SendKind",
    "SendRequest",
    "SendResult",
]
