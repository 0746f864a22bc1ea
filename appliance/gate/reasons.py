"""Reason codes: part of the API (audit rows, webhooks, scripts depend on them)."""

from typing import Final

SENDER_NOT_ALLOWED: Final = "sender_not_allowed"
DKIM_REQUIRED: Final = "dkim_required"
SPF_REQUIRED: Final = "spf_required"
DMARC_REQUIRED: Final = "dmarc_required"
MALFORMED_MESSAGE: Final = "malformed_message"
LOOP_SUSPECTED: Final = "loop_suspected"
RATE_LIMITED: Final = "rate_limited"
TOKEN_BUDGET_EXHAUSTED: Final = "token_budget_exhausted"
DNS_TEMPORARY_FAILURE: Final = "dns_temporary_failure"
MESSAGE_TOO_LARGE: Final = "message_too_large"
MESSAGE_TOO_COMPLEX: Final = "message_too_complex"
"""Reading the message would cost more than its limits allow (header fields, parts, nesting, time)."""
QUARANTINED_BY_RULE: Final = "quarantined_by_rule"
"""The matched rule's ``action`` is quarantine: held for an operator."""
DROPPED_BY_RULE: Final = "dropped_by_rule"

ALL: Final = frozenset({
    SENDER_NOT_ALLOWED, DKIM_REQUIRED, SPF_REQUIRED, DMARC_REQUIRED, MALFORMED_MESSAGE,
    LOOP_SUSPECTED, RATE_LIMITED, TOKEN_BUDGET_EXHAUSTED, DNS_TEMPORARY_FAILURE, MESSAGE_TOO_LARGE,
    MESSAGE_TOO_COMPLEX, QUARANTINED_BY_RULE, DROPPED_BY_RULE,
})
"""The gate's own codes; a content guard adds its own ``reason`` besides these."""
