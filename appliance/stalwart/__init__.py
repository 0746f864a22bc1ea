"""Stalwart, the production mail server: its MTA hook (wire types and mapping), and its supervisor."""

from appliance.stalwart.hook import HookRequestError, MtaHook, rebuild_message
from appliance.stalwart.proto import HookRequest, HookResponse, decode_request, encode_response
from appliance.stalwart.supervisor import StalwartNotReady, Supervisor, SupervisorState, metrics_lines

__all__ = [
    "HookRequest",
    "HookRequestError",
    "HookResponse",
    "MtaHook",
    "StalwartNotReady",
    "Supervisor",
    "SupervisorState",
    "decode_request",
    "encode_response",
    "metrics_lines",
    "rebuild_message",
]
