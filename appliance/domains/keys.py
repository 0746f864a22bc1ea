"""The DKIM public keys a domain's manifest publishes: where they come from is a seam.

``LocalDkimKeys`` reads the keys the appliance signs outbound mail with
(``data_dir/dkim/<domain>/<stem>-rsa.pem`` and ``<stem>-ed25519.pem``, made by
``appliance.mailauth.keys``; ``stem`` is ``[outbound] dkim_selector``). When
Stalwart signs the mail, another ``DkimKeys`` reads Stalwart's own keys
(``x:DkimSignature/query`` + ``/get``: ``selector``, ``@type``
``Dkim1RsaSha256``/``Dkim1Ed25519Sha256``, ``publicKey``).
"""

from __future__ import annotations

__all__ = ["DkimKeys", "DkimPublicKey", "LocalDkimKeys", "SigningDkimKeys"]

import asyncio
from pathlib import Path
from typing import Protocol, runtime_checkable

from appliance.mailauth.keys import KeyOutcome, PublicKey, ensure_signing_keys, load_signing_keys, public_key

DkimPublicKey = PublicKey
"""One selector's public key: ``selector``, ``kind`` (``rsa``/``ed25519``, the ``k=``) and ``p`` (base64)."""


@runtime_checkable  # Litestar checks what a dependency provides against its declared type
class DkimKeys(Protocol):
    """Where a domain's DKIM public keys are found."""

    async def public_keys(self, domain: str) -> list[DkimPublicKey]:
        """The keys that sign ``domain``'s mail (RSA first), each to be published at ``<selector>._domainkey``;
        empty when the domain has none yet."""
        ...


class LocalDkimKeys:
    """The appliance's own signing keys (those ``appliance.outbound`` signs with)."""

    def __init__(self, data_dir: Path, stem: str) -> None:
        self.data_dir = data_dir
        self.stem = stem
        """``[outbound] dkim_selector``: the selectors are ``<stem>-rsa`` and ``<stem>-ed25519``."""

    async def public_keys(self, domain: str) -> list[DkimPublicKey]:
        keys = await asyncio.to_thread(load_signing_keys, self.data_dir, domain, self.stem)
        return [public_key(key) for key in keys]

    def ensure(self, domain: str) -> list[KeyOutcome]:
        """Make ``domain``'s missing keys (an RSA-2048 and an ed25519), keeping those that exist."""
        return ensure_signing_keys(self.data_dir, domain, self.stem)


class SigningDkimKeys:
    """The keys of everyone who signs a domain's mail (in stalwart mode: the outbox, and Stalwart as it
    relays), each selector once: a key that signs but is not published fails every signature it makes."""

    def __init__(self, *sources: DkimKeys) -> None:
        self.sources = sources

    async def public_keys(self, domain: str) -> list[DkimPublicKey]:
        found: dict[str, DkimPublicKey] = {}
        for source in self.sources:
            for key in await source.public_keys(domain):
                found.setdefault(key.selector, key)
        return sorted(found.values(), key=lambda k: k.kind != "rsa")  # RSA first, as each source gives them
