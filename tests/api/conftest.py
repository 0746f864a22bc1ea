"""An app over a real Runtime, driven in-process with Litestar's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.runtime import Runtime

ADMIN = {"Authorization": "Bearer admin-secret"}
AGENT_KEY = {"Authorization": "Bearer agent-key"}


@pytest.fixture
async def client(make_config: Callable[..., ApplianceConfig],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("TEST_AGENT_KEY", "agent-key")
    config = make_config()
    config = config.__class__(**{**{f: getattr(config, f) for f in config.__struct_fields__},
                                 "agents": [a.__class__(**{**{f: getattr(a, f) for f in a.__struct_fields__},
                                                           "api_key_env": "TEST_AGENT_KEY"}) if i == 0 else a
                                            for i, a in enumerate(config.agents)]})
    async with AsyncTestClient(app=create_app(config)) as test_client:
        yield test_client


def runtime_of(client: AsyncTestClient) -> Runtime:  # type: ignore[type-arg]
    runtime: Runtime = client.app.state.runtime
    return runtime
