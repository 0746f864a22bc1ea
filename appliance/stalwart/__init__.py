"""Stalwart, the production mail server: its MTA hook (wire types and mapping)."""

from appliance.stalwart.hook import HookRequestError, MtaHook, rebuild_message
from appliance.stalwart.proto import HookRequest, HookResponse, decode_request, encode_response

__all__ = [
    "HookRequest",
    "HookRequestError",
    "HookResponse",
    "MtaHook",
    "decode_request",
    "encode_response",
    "rebuild_message",
]
