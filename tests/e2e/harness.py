"""An appliance run as a real subprocess, for end-to-end and crash tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, *, policy: str, agent: str = "agent@example.test",
                 nameservers: list[str] | None = None, webhook_url: str | None = None,
                 extra_agent_lines: str = "") -> Path:
    """A sandbox configuration with free ports, its policy beside it."""
    (directory / "policy.toml").write_text(policy)
    smtp_port, http_port = free_port(), free_port()
    ns = ", ".join(f'"{n}"' for n in (nameservers or ["127.0.0.1:9"]))
    webhook = f'webhook_url = "{webhook_url}"\nwebhook_secret_env = "AGENT_WEBHOOK_SECRET"\n' if webhook_url else ""
    path = directory / "appliance.toml"
    path.write_text(f"""
mode = "sandbox"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{http_port}"
[smtp]
listen = "127.0.0.1:{smtp_port}"
[dns]
nameservers = [{ns}]
timeout = 0.5
[[agents]]
address = "{agent}"
policy = "policy.toml"
api_key_env = "AGENT_API_KEY"
{webhook}{extra_agent_lines}
""")
    return path


class ApplianceProcess:
    """``appliance run`` in a subprocess, with its ports read back from the config."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        import tomllib

        data = tomllib.loads(config.read_text())
        self.config = config
        self.smtp_port = int(data["smtp"]["listen"].rpartition(":")[2]) if "smtp" in data else 0
        """The embedded SMTP server's port (sandbox mode; 0 in stalwart mode, where Stalwart listens)."""
        self.http_port = int(data["http"]["listen"].rpartition(":")[2])
        self.env = {**os.environ, "APPLIANCE_ADMIN_TOKEN": "admin-test-token", "AGENT_API_KEY": "agent-test-key",
                    **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "appliance.log"

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(self.config)],
                                         stdout=log, stderr=log, env=self.env, cwd=self.config.parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"appliance exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"appliance not healthy after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> ApplianceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
