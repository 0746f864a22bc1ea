"""What an agent hears about its own mail: ``message.sent`` and ``message.bounced`` (a contract: camelCase keys).

The wire types are the SDK's (``appliance.sdk``), as for every other event,
so the appliance and its agents cannot drift apart; this module names them
for the send half and says what each means.

Both travel through the agent's delivery queue (``appliance.delivery.jobs``),
written in the same transaction as the outcome they report, so an agent
hears of each end exactly when it is on disk, at least once, under a stable
delivery id.

- ``message.sent``: a peer answered 250 to DATA for these recipients (with
  ``capture``: the message was kept, or handed to a local agent's gate).
- ``message.bounced``: these recipients will not get it. ``reason`` says
  how we know: ``rejected`` (a 5xx reply, or a local agent's gate bounced it),
  ``expired`` (temporary failures for longer than ``[outbound] retry_for``),
  ``dsn`` (a peer that had taken it sent a delivery status notification,
  RFC 3464, back to the agent).
"""

from __future__ import annotations

__all__ = [
    "EVENT_DATA",
    "BounceReason",
    "BouncedRecipient",
    "MessageBounced",
    "MessageBouncedData",
    "MessageSent",
    "MessageSentData",
]

from typing import Literal

import msgspec

from appliance.sdk import BouncedRecipient, MessageBounced, MessageBouncedData, MessageSent, MessageSentData

BounceReason = Literal["rejected", "expired", "dsn"]

EVENT_DATA: dict[str, tuple[type[msgspec.Struct], type[msgspec.Struct]]] = {
    "message.sent": (MessageSent, MessageSentData),
    "message.bounced": (MessageBounced, MessageBouncedData),
}
"""Event type -> (its envelope, its data): what ``appliance.delivery.payload`` registers to render them."""
