"""Stalwart's management API (0.16): JMAP at ``/jmap/`` with ``x:<Object>/get|set|query`` methods.

A thin adapter: it sends calls and returns what Stalwart answered, as
``ManagementObject`` values (Stalwart's property maps) or raises
``ManagementError`` naming the method, the error type and Stalwart's words.
What to create or change is ``appliance.stalwart.provision``'s to decide.
"""

from __future__ import annotations

__all__ = [
    "MANAGEMENT_USING",
    "ManagementClient",
    "ManagementError",
    "ManagementObject",
    "SetOutcome",
    "basic_authorization",
]

import base64
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

MANAGEMENT_USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]

ManagementObject = dict[str, Any]
"""One Stalwart object as its JMAP properties (``@type``, index-keyed maps and all): Stalwart's
schema is open-ended, so the client keeps it as sent; ``provision`` builds the ones it writes."""


class ManagementError(Exception):
    """Stalwart refused or failed a management call."""

    def __init__(self, method: str, kind: str, description: str = "") -> None:
        super().__init__(f"Stalwart {method}: {kind}" + (f" ({description})" if description else ""))
        self.method = method
        self.kind = kind
        self.description = description


class SetOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``x:<Object>/set`` did: created objects by our creation id, and what was refused."""

    created: dict[str, ManagementObject] = {}
    updated: list[str] = []
    destroyed: list[str] = []
    not_created: dict[str, ManagementObject] = {}
    not_updated: dict[str, ManagementObject] = {}
    not_destroyed: dict[str, ManagementObject] = {}

    def raise_for_refusals(self, method: str) -> None:
        """``ManagementError`` for the first refused create, update or destroy."""
        for kind, refused in (("create", self.not_created), ("update", self.not_updated),
                              ("destroy", self.not_destroyed)):
            for key, error in refused.items():
                detail = error.get("description") or ", ".join(error.get("properties") or [])
                raise ManagementError(method, f"{kind} {key} refused: {error.get('type', 'unknown')}", str(detail))


def basic_authorization(login: str, secret: str) -> str:
    """``Basic base64(login:secret)`` (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{login}:{secret}".encode()).decode("ascii")


class ManagementClient:
    """Calls Stalwart's management methods as its administrator."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, authorization: str) -> None:
        self.client = client
        self.api_url = base_url.rstrip("/") + "/jmap/"
        self.authorization = authorization

    async def call(self, method: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """One method call; its response arguments, or ``ManagementError``."""
        body = {"using": MANAGEMENT_USING, "methodCalls": [[method, dict(arguments), "0"]]}
        try:
            answer = await self.client.post(self.api_url, json=body,
                                            headers={"Authorization": self.authorization})
        except httpx.HTTPError as exc:
            raise ManagementError(method, "unreachable", f"{self.api_url}: {exc!r}") from exc
        if answer.status_code == 401:
            raise ManagementError(method, "unauthorized", "the admin secret was refused (STALWART_RECOVERY_ADMIN)")
        if answer.status_code != 200:
            raise ManagementError(method, f"HTTP {answer.status_code}", answer.text[:300])
        try:
            responses = answer.json()["methodResponses"]
            name, result, _ = responses[0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ManagementError(method, "malformed response", answer.text[:300]) from exc
        if name == "error":
            raise ManagementError(method, str(result.get("type", "error")), str(result.get("description", "")))
        if not isinstance(result, dict):
            raise ManagementError(method, "malformed response", answer.text[:300])
        return result

    async def get(self, kind: str, ids: list[str] | None = None, *,
                  account_id: str | None = None) -> list[ManagementObject]:
        """``x:<kind>/get``: every object (``ids`` None) or those named."""
        arguments: dict[str, Any] = {"ids": ids}
        if account_id is not None:
            arguments["accountId"] = account_id
        result = await self.call(f"x:{kind}/get", arguments)
        found = result.get("list")
        return [o for o in found if isinstance(o, dict)] if isinstance(found, list) else []

    async def query(self, kind: str, filter: Mapping[str, Any] | None = None) -> list[str]:
        """``x:<kind>/query``: the ids matching ``filter``."""
        arguments: dict[str, Any] = {"filter": dict(filter)} if filter else {}
        ids = (await self.call(f"x:{kind}/query", arguments)).get("ids")
        return [str(i) for i in ids] if isinstance(ids, list) else []

    async def set(self, kind: str, *, create: Mapping[str, ManagementObject] | None = None,
                  update: Mapping[str, ManagementObject] | None = None, destroy: list[str] | None = None,
                  account_id: str | None = None) -> SetOutcome:
        """``x:<kind>/set``; refusals raise ``ManagementError``."""
        method = f"x:{kind}/set"
        arguments: dict[str, Any] = {}
        if create:
            arguments["create"] = dict(create)
        if update:
            arguments["update"] = dict(update)
        if destroy:
            arguments["destroy"] = destroy
        if account_id is not None:
            arguments["accountId"] = account_id
        result = await self.call(method, arguments)

        def objects(key: str) -> dict[str, ManagementObject]:
            value = result.get(key)
            if not isinstance(value, dict):
                return {}
            return {str(k): (v if isinstance(v, dict) else {}) for k, v in value.items()}

        updated = result.get("updated")
        outcome = SetOutcome(
            created=objects("created"), updated=[str(k) for k in updated] if isinstance(updated, dict) else [],
            destroyed=[str(i) for i in result.get("destroyed") or []], not_created=objects("notCreated"),
            not_updated=objects("notUpdated"), not_destroyed=objects("notDestroyed"))
        outcome.raise_for_refusals(method)
        return outcome
