"""The SDK's public face: ``__all__`` matches what is exported, and nothing heavy is imported."""

from __future__ import annotations

import subprocess
import sys

import appliance.sdk


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(appliance.sdk) if not name.startswith("_")}
    assert set(appliance.sdk.__all__) == public
    assert len(appliance.sdk.__all__) == len(set(appliance.sdk.__all__))


def test_the_sdk_imports_without_the_server_dependencies() -> None:
    code = (
        "import sys\n"
        "import appliance.sdk\n"
        "heavy = {'litestar', 'duckdb', 'httpx', 'uvicorn', 'aiosmtpd', 'dkim', 'spf', 'dns', 'apscheduler', "
        "'yaml', 'appliance.config', 'appliance.store.database'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy)\n"
        "assert not loaded, loaded\n"
        "mine = sorted(m for m in sys.modules if m.startswith('appliance'))\n"
        "assert mine == ['appliance', 'appliance.sdk', 'appliance.sdk._client', 'appliance.sdk._errors', "
        "'appliance.sdk._models', 'appliance.sdk._payload', "
        "'appliance.sdk._webhooks'], mine\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
