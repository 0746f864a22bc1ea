"""The JMAP Session resource (RFC 8620 2): capabilities, the caller's accounts, and where things are."""

from __future__ import annotations

__all__ = ["session", "session_state"]

import hashlib
from typing import Any

import msgspec

from appliance.jmap import mailbox
from appliance.jmap.local import account_id
from appliance.jmap.proto import CORE, MAIL, SUBMISSION, VENDOR
from appliance.jmap.service import Caller, JmapService

API_PATH = "/api/v1/jmap"
SORT_OPTIONS = ["receivedAt", "sentAt", "size", "from", "to", "subject", "hasKeyword", "allInThreadHaveKeyword",
                "someInThreadHaveKeyword"]


def _capabilities(service: JmapService) -> dict[str, Any]:
    return {CORE: msgspec.to_builtins(service.limits), MAIL: {}, SUBMISSION: {},
            VENDOR: {"gateProperty": "urn:appliance:jmap:gate",
                     "capabilityTokenProperty": "urn:appliance:jmap:capabilityToken"}}


def _account(service: JmapService, agent: str) -> dict[str, Any]:
    return {"name": agent, "isPersonal": True, "isReadOnly": False, "accountCapabilities": {
        MAIL: {"maxMailboxesPerEmail": None, "maxMailboxDepth": mailbox.MAX_DEPTH,
               "maxSizeMailboxName": mailbox.MAX_NAME, "maxSizeAttachmentsPerEmail": service.limits.max_size_upload,
               "emailQuerySortOptions": SORT_OPTIONS, "mayCreateTopLevelMailbox": True},
        SUBMISSION: {"maxDelayedSend": 0, "submissionExtensions": {}},
        VENDOR: {}}}


def _core(service: JmapService, caller: Caller) -> dict[str, Any]:
    accounts = {account_id(a): _account(service, a) for a in caller.agents}
    primary = account_id(caller.agents[0]) if caller.agents else None
    return {"capabilities": _capabilities(service), "accounts": accounts,
            "primaryAccounts": {c: primary for c in (CORE, MAIL, SUBMISSION, VENDOR)} if primary else {},
            "username": caller.name}


def session_state(service: JmapService, caller: Caller) -> str:
    """Changes whenever what the Session says (URLs aside) does."""
    return hashlib.sha256(msgspec.json.encode(_core(service, caller))).hexdigest()[:16]


def session(service: JmapService, caller: Caller, base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/") + API_PATH
    return {**_core(service, caller), "apiUrl": base,
            "downloadUrl": base + "/download/{accountId}/{blobId}/{name}?accept={type}",
            "uploadUrl": base + "/upload/{accountId}",
            "eventSourceUrl": base + "/eventsource?types={types}&closeafter={closeafter}&ping={ping}",
            "state": session_state(service, caller)}
