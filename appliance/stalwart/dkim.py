"""Stalwart's own DKIM keys (stalwart mode: Stalwart signs the mail it sends), read over management JMAP.

Stalwart makes a domain's keys asynchronously after ``x:Domain/set`` (RSA and
ed25519 with ``generateDkimKeys``); ``x:DkimSignature/query`` + ``/get`` list
them with ``selector``, ``@type`` (``Dkim1RsaSha256`` / ``Dkim1Ed25519Sha256``)
and ``publicKey``. A ``DkimKeys`` for ``appliance.domains``: the manifest then
publishes the keys Stalwart really signs with.
"""

from __future__ import annotations

__all__ = ["StalwartDkimKeys", "public_keys_of"]

import base64
import os
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from appliance.config import ApplianceConfig
from appliance.mailauth.keys import PublicKey
from appliance.stalwart.management import ManagementClient, basic_authorization

_KINDS: dict[str, Literal["rsa", "ed25519"]] = {"Dkim1RsaSha256": "rsa", "Dkim1Ed25519Sha256": "ed25519"}


def _p_value(public_key: str) -> str:
    """``p=`` from Stalwart's ``publicKey``: base64 as it is, PEM armour (if any) removed."""
    lines = [line.strip() for line in public_key.strip().splitlines() if line.strip() and "-----" not in line]
    value = "".join(lines)
    base64.b64decode(value, validate=True)  # a key that is not base64 is Stalwart's bug: say so, loudly
    return value


def public_keys_of(objects: list[dict[str, Any]]) -> list[PublicKey]:
    """The ``x:DkimSignature`` objects as DNS-ready public keys, RSA first; unknown algorithms left out."""
    keys = [PublicKey(selector=str(o["selector"]), kind=_KINDS[str(o["@type"])], p=_p_value(str(o["publicKey"])))
            for o in objects if o.get("@type") in _KINDS and o.get("selector") and o.get("publicKey")]
    return sorted(keys, key=lambda k: (k.kind != "rsa", k.selector))


class StalwartDkimKeys:
    """A domain's keys as Stalwart holds them."""

    def __init__(self, base_url: str, authorization: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.authorization = authorization
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: ApplianceConfig, environ: Mapping[str, str] | None = None) -> StalwartDkimKeys:
        """The keys of the Stalwart ``config`` names, as its admin (``ValueError`` names what is missing)."""
        env = os.environ if environ is None else environ
        section = config.stalwart
        secret = env.get(section.admin_secret_env, "").strip()
        if not section.jmap_url or not secret:
            raise ValueError(f"stalwart.jmap_url and ${section.admin_secret_env} are needed to read Stalwart's "
                             f"DKIM keys")
        return cls(section.jmap_url, basic_authorization(section.admin_login, secret), timeout=section.timeout)

    async def public_keys(self, domain: str) -> list[PublicKey]:
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            client = ManagementClient(http, self.base_url, self.authorization)
            domains = await client.get("Domain")
            found = next((str(d["id"]) for d in domains if str(d.get("name", "")).lower() == domain.lower()), None)
            if found is None:
                return []
            ids = await client.query("DkimSignature", {"domainId": found})
            return public_keys_of(await client.get("DkimSignature", ids) if ids else [])
