"""A stalwart-mode appliance (``appliance run``, a real subprocess) supervising the stand-in as its local
``stalwart`` binary: the configuration, the processes, and what the tests and ``bench/stalwart.py`` ask
of them."""

from __future__ import annotations

import contextlib
import json
import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import duckdb
import httpx

from tests.conftest import POLICY
from tests.dnsserver import DnsTestServer
from tests.e2e.harness import ApplianceProcess
from tests.images import free_port
from tests.stalwart.standin_process import StandinProcess

AGENT = "agent@example.test"
ADMIN_SECRET = "stalwart-admin-secret"
HOOK_SECRET = "hook-secret-for-tests"
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"STALWART_ADMIN_SECRET": ADMIN_SECRET, "STALWART_HOOK_SECRET": HOOK_SECRET,
       "AGENT_WEBHOOK_SECRET": WEBHOOK_SECRET}


def toml_table(values: dict[str, str]) -> str:
    """An inline TOML table (JSON strings are TOML basic strings)."""
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in values.items()) + " }"


class Stack:
    """The appliance and the stand-in it supervises, and where to reach them."""

    def __init__(self, root: Path, dns: DnsTestServer, webhook_url: str, *, image: str | None = None,
                 name: str = "") -> None:
        """``image``: the stand-in runs as that Docker image (container and volumes named after ``name``),
        else as a local binary."""
        self.root = root
        self.http_port, self.stalwart_http, self.stalwart_smtp = free_port(), free_port(), free_port()
        self.stalwart_url = f"http://127.0.0.1:{self.stalwart_http}"
        (root / "policy.toml").write_text(POLICY)
        listen = {"STANDIN_HTTP": f"127.0.0.1:{self.stalwart_http}", "STANDIN_SMTP": f"127.0.0.1:{self.stalwart_smtp}"}
        if image is None:
            standin = StandinProcess(root / "stalwart-data", root / "stalwart-etc", self.stalwart_http,
                                     self.stalwart_smtp, admin=f"admin:{ADMIN_SECRET}")
            environment = {**listen, "STANDIN_DATA": standin.env["STANDIN_DATA"]}
            supervision = f'supervise = "binary"\ncommand = {json.dumps(standin.command)}'
        else:
            environment = listen  # host networking: the container's loopback is ours
            supervision = (f'supervise = "docker"\nimage = "{image}"\ncontainer = "{name}"\n'
                           f'config_volume = "{name}-etc"\ndata_volume = "{name}-data"\nnetwork_mode = "host"')
        self.config = root / "appliance.toml"
        self.config.write_text(f"""
mode = "stalwart"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{self.http_port}"
[dns]
nameservers = ["{dns.address}"]
timeout = 1.0
[outbound]
transport = "stalwart"
[stalwart]
jmap_url = "{self.stalwart_url}"
{supervision}
environment = {toml_table(environment)}
health_interval = 0.5
restart_backoff = 0.2
ready_timeout = 30
[[agents]]
address = "{AGENT}"
policy = "policy.toml"
api_key_env = "AGENT_API_KEY"
webhook_url = "{webhook_url}"
webhook_secret_env = "AGENT_WEBHOOK_SECRET"
""")
        self.appliance = ApplianceProcess(self.config, env=ENV)

    @contextlib.contextmanager
    def running(self) -> Iterator[ApplianceProcess]:
        """The appliance started (healthy: Stalwart ready and configured), stopped by SIGTERM after, as an
        operator stops it (the supervisor then stops Stalwart); killed only if it does not stop."""
        self.appliance.start(timeout=120)
        try:
            yield self.appliance
        finally:
            if self.appliance.proc is not None and self.appliance.proc.poll() is None:
                try:
                    self.appliance.terminate(timeout=60)
                finally:
                    self.appliance.__exit__(None, None, None)

    def standin(self, path: str) -> Any:
        return httpx.get(self.stalwart_url + path, timeout=5).json()

    def sql(self, query: str) -> list[list[Any]]:
        """Rows of a read-only query through the running appliance's audit API."""
        answer = httpx.post(f"http://127.0.0.1:{self.http_port}/api/v1/audit/sql", json={"sql": query},
                            headers={"Authorization": "Bearer admin-test-token"}, timeout=10)
        answer.raise_for_status()
        return list(answer.json()["rows"])

    def db(self) -> duckdb.DuckDBPyConnection:
        """The appliance's database file, read-only (only while the appliance is stopped: DuckDB locks it)."""
        return duckdb.connect(str(self.root / "var" / "appliance.duckdb"), read_only=True)


SENDER_ZONE = [("example.net", "TXT", "v=spf1 ip4:127.0.0.1 -all")]
"""The sender's domain, as the loopback DNS server must serve it (SPF passes from loopback)."""


def send(port: int, subject: str = "Lunch on Friday?", *, to: str = AGENT, timeout: float = 20) -> None:
    """One message from alice@example.net to the agent (``to``), over SMTP into Stalwart's port."""
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.net>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{time.monotonic_ns()}@example.net>"
    msg.set_content("Shall we meet at noon?")
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as smtp:
        smtp.send_message(msg)


