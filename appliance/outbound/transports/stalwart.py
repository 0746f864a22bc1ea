"""``stalwart``: the agents' mail leaves through Stalwart, by JMAP ``EmailSubmission`` (RFC 8621 7).

The queued bytes (already composed and signed by the outbox) are uploaded to
the agent's Stalwart account, imported into its Sent mailbox and submitted
with our envelope. Stalwart runs the submission through its MTA hook, where
the outbound policy is checked again (``appliance.gate.outbound.recheck_submission``),
and then queues and relays it itself. The agent's account and the
appliance's API key for it are ``appliance.stalwart.provision``'s.
"""

from __future__ import annotations

__all__ = ["StalwartTransport"]

from typing import Any

import httpx

from appliance.outbound.model import Delivery, DeliveryOutcome
from appliance.stalwart.account import AccountClient, JmapCallError
from appliance.store.database import Database
from appliance.store.stalwart import StalwartKey, stalwart_keys

_REFUSED = ("forbiddenToSend", "forbiddenFrom", "forbiddenMailFrom", "invalidEmail", "tooManyRecipients",
            "noRecipients", "invalidRecipients", "tooLarge")
"""``EmailSubmission/set`` errors that sending again will not change (RFC 8621 7.5): final."""


class StalwartTransport:
    """Submits each delivery through the agent's own Stalwart account."""

    name = "stalwart"

    def __init__(self, db: Database, base_url: str, *, timeout: float = 30.0) -> None:
        self.db = db
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(timeout=timeout)
        self._accounts: dict[str, tuple[str, AccountClient]] = {}
        self._places: dict[str, tuple[str, str]] = {}
        """Agent -> (its Sent mailbox id, its identity id)."""

    async def _account(self, agent: str) -> AccountClient | None:
        keys: list[StalwartKey] = await self.db.read(stalwart_keys)
        key = next((k for k in keys if k.agent == agent), None)
        if key is None:
            return None
        cached = self._accounts.get(agent)
        if cached is None or cached[0] != key.secret:  # a key replaced by provisioning
            cached = (key.secret, AccountClient(self.http, self.base_url, key.secret))
            self._accounts[agent] = cached
            self._places.pop(agent, None)
        return cached[1]

    async def _places_of(self, agent: str, account: AccountClient) -> tuple[str, str]:
        if agent not in self._places:
            boxes = (await account.call("Mailbox/get", {"ids": None, "properties": ["id", "role"]})).get("list") or []
            sent = next((str(b["id"]) for b in boxes if isinstance(b, dict) and b.get("role") == "sent"), None)
            identities = (await account.call("Identity/get", {"ids": None})).get("list") or []
            identity = next((str(i["id"]) for i in identities
                             if isinstance(i, dict) and str(i.get("email", "")).lower() == agent), None)
            if sent is None or identity is None:
                missing = "Sent mailbox" if sent is None else "identity"
                raise JmapCallError("Mailbox/get", "setup", f"{agent} has no {missing} at Stalwart")
            self._places[agent] = (sent, identity)
        return self._places[agent]

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        peer = f"stalwart {self.base_url}"
        account = await self._account(delivery.agent)
        if account is None:
            return DeliveryOutcome(status="retry", code=None, peer=peer,
                                   detail=f"no Stalwart account for {delivery.agent} yet (provisioning has not run)")
        try:
            sent, identity = await self._places_of(delivery.agent, account)
            blob = await account.upload(delivery.raw)
            imported = await account.call("Email/import", {"emails": {"m": {
                "blobId": blob, "mailboxIds": {sent: True}, "keywords": {"$seen": True}}}})
            email_id = _created_id(imported, "m")
            if email_id is None:
                return DeliveryOutcome(status="retry", code=None, peer=peer,
                                       detail=f"Email/import refused: {_refusal(imported, 'm')}")
            submitted = await account.call("EmailSubmission/set", {"create": {"s": {
                "identityId": identity, "emailId": email_id,
                "envelope": {"mailFrom": {"email": delivery.mail_from},
                             "rcptTo": [{"email": r} for r in delivery.recipients]}}}})
        except JmapCallError as exc:
            self._places.pop(delivery.agent, None)
            return DeliveryOutcome(status="retry", code=None, peer=peer, detail=str(exc))
        if _created_id(submitted, "s") is not None:
            return DeliveryOutcome(status="sent", code=250, peer=peer,
                                   detail=f"queued by Stalwart as submission of {email_id}")
        refusal = (submitted.get("notCreated") or {}).get("s") or {}
        kind = str(refusal.get("type", ""))
        detail = f"EmailSubmission/set refused: {_refusal(submitted, 's')}"
        if kind in _REFUSED:
            return DeliveryOutcome(status="failed", code=550, peer=peer, detail=detail)
        return DeliveryOutcome(status="retry", code=None, peer=peer, detail=detail)

    async def aclose(self) -> None:
        await self.http.aclose()


def _created_id(result: dict[str, Any], key: str) -> str | None:
    created = (result.get("created") or {}).get(key)
    return str(created["id"]) if isinstance(created, dict) and "id" in created else None


def _refusal(result: dict[str, Any], key: str) -> str:
    error = (result.get("notCreated") or {}).get(key) or {}
    return f"{error.get('type', 'no answer')}" + (f" ({error['description']})" if error.get("description") else "")
