"""The product page's policy, as a typed Python module (`appliance policy check examples/policy.py`)."""

import re

from appliance.policy import (
    AuditLog,
    ContentGuard,
    MailPolicy,
    Match,
    RateLimit,
    SenderRule,
    TokenBudget,
)

policy = MailPolicy(
    default_action="bounce",
    senders=[
        SenderRule(
            match=Match(address="boss@acme.com", require_dkim=True, require_spf=True),
            capabilities=["read_calendar", "propose_meeting", "confirm_meeting"],
            rate_limit=RateLimit(per_hour=20, per_day=100),
            token_budget=TokenBudget(per_thread=20_000),
        ),
        SenderRule(
            match=Match(address="notifications@calendar-bot.internal", require_dkim=True),
            capabilities=["ingest_conflict_notice"],
            rate_limit=RateLimit(per_hour=200),
        ),
    ],
    content_guards=[
        ContentGuard(
            reject=re.compile(r"ignore (previous|all) instructions", re.IGNORECASE),
            reason="prompt_injection_suspected",
        ),
    ],
    audit_log=AuditLog(retention_days=90, include_body_hash=True),
)
