"""The audit log: every decision, append-only, hash-chained per agent."""

from appliance.audit.chain import (
    GENESIS,
    DecisionRecord,
    VerifyReport,
    append_decision,
    apply_retention,
    record_event,
    row_hash,
    verify_chain,
)

__all__ = [
    "GENESIS",
    "DecisionRecord",
    "VerifyReport",
    "append_decision",
    "apply_retention",
    "record_event",
    "row_hash",
    "verify_chain",
]
