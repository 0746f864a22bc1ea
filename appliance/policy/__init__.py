"""The policy document and its loaders."""

from appliance.policy.load import load_policy, parse_pattern, policy_from_builtins, policy_to_builtins
from appliance.policy.model import (
    Action,
    AuditLog,
    ContentGuard,
    MailPolicy,
    Match,
    OutboundPolicy,
    OutboundRateLimit,
    RateLimit,
    SenderRule,
    TokenBudget,
)

__all__ = [
    "Action",
    "AuditLog",
    "ContentGuard",
    "MailPolicy",
    "Match",
    "OutboundPolicy",
    "OutboundRateLimit",
    "RateLimit",
    "SenderRule",
    "TokenBudget",
    "load_policy",
    "parse_pattern",
    "policy_from_builtins",
    "policy_to_builtins",
]
