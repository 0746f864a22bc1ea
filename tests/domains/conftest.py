"""Shared facts for the domain tests: a domain, its keys, and the manifest they make."""

from __future__ import annotations

import pytest

from appliance.domains.keys import DkimPublicKey
from appliance.domains.manifest import DnsManifest, ManifestFacts, manifest
from appliance.mailauth.keys import generate_key, public_key

DOMAIN = "example.test"
MX = "mx.example.test"
ADDRESS = "192.0.2.25"


@pytest.fixture(scope="session")
def dkim_keys() -> tuple[DkimPublicKey, ...]:
    """An RSA-2048 and an ed25519 public key (selectors appliance-rsa, appliance-ed25519)."""
    return (public_key(generate_key("appliance-rsa", "rsa-sha256")),
            public_key(generate_key("appliance-ed25519", "ed25519-sha256")))


def facts(keys: tuple[DkimPublicKey, ...], *, addresses: tuple[str, ...] = (ADDRESS,), mx: str = MX) -> ManifestFacts:
    return ManifestFacts(mx_host=mx, public_addresses=addresses, dkim_keys=keys,
                         report_address=f"dmarc-reports@{DOMAIN}", mta_sts_mode="testing",
                         mta_sts_policy_id="ABCDEF0123456789")


@pytest.fixture
def expected(dkim_keys: tuple[DkimPublicKey, ...]) -> DnsManifest:
    """The manifest of DOMAIN with a known public address."""
    return manifest(DOMAIN, facts(dkim_keys))
