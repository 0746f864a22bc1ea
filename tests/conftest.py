"""Shared fixtures: a loopback DNS server, and a real Runtime over a temporary data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.config import ApplianceConfig
from appliance.runtime import Runtime
from tests.dnsserver import DnsTestServer

AGENT = "agent@example.test"
OTHER_AGENT = "other@example.test"
HOSTNAME = "mx.example.test"

POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]

[[senders]]
match = { domain = "signed.example", requireDkim = true }
capabilities = ["read"]

[[senders]]
match = { domain = "strict.example", requireSpf = true }

[[senders]]
match = { domain = "held.example" }
action = "quarantine"

[[senders]]
match = { domain = "dropped.example" }
action = "drop"
"""
"""The test policy: example.net is let in; signed.example must be DKIM-signed; strict.example must
pass SPF; held.example is quarantined; dropped.example dropped; anyone else bounced."""


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A loopback DNS server (UDP and TCP); its zone starts empty, so every name is NXDOMAIN."""
    with DnsTestServer() as server:
        yield server


@pytest.fixture
def make_config(tmp_path: Path, dns_server: DnsTestServer) -> Callable[..., ApplianceConfig]:
    """``make_config(**overrides)``: a configuration over ``tmp_path`` whose DNS is ``dns_server``.

    ``policies`` maps agent addresses to policy text (default: AGENT and OTHER_AGENT under
    POLICY); any other keyword overrides a top-level key or a section (``smtp={...}``).
    """

    def make(*, policies: dict[str, str] | None = None, **overrides: Any) -> ApplianceConfig:
        agents = []
        for i, (address, text) in enumerate(
            (policies or {AGENT: POLICY, OTHER_AGENT: POLICY}).items()
        ):
            path = tmp_path / f"policy{i}.toml"
            path.write_text(text)
            agents.append({"address": address, "policy": path.name})
        data: dict[str, Any] = {
            "mode": "stalwart",
            "hostname": HOSTNAME,
            "data_dir": "var",
            "base_dir": str(tmp_path),
            "http": {"admin_token_env": "TEST_APPLIANCE_ADMIN_TOKEN"},
            "smtp": {"listen": "127.0.0.1:0"},
            "dns": {"nameservers": [dns_server.address], "timeout": 0.5},
            "hook": {"secret_env": "TEST_APPLIANCE_HOOK_SECRET"},
            "agents": agents,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        (tmp_path / "var").mkdir(exist_ok=True)
        return msgspec.convert(data, ApplianceConfig)

    return make


@pytest.fixture
async def runtime(make_config: Callable[..., ApplianceConfig]) -> AsyncIterator[Runtime]:
    """A started Runtime in stalwart mode (no SMTP listener of its own), stopped afterwards."""
    rt = Runtime(make_config())
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()
