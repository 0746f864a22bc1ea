"""The stand-in's running context: settings from the environment, state, flags, push hub."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from push import Hub
from state import State

SERVER_NAME = "Stalwart v0.16.18"


def split_hostport(text: str, default_host: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets allowed) as a pair."""
    host, _, port = text.rpartition(":")
    return (host.strip("[]") or default_host), int(port)


@dataclass
class App:
    """Everything a request handler or SMTP session needs."""

    config_path: Path
    configured: bool
    state: State
    admin_login: str | None
    admin_password: str | None
    hostname: str
    public_url: str
    http_bind: tuple[str, int]
    smtp_bind: tuple[str, int]
    relay: tuple[str, int] | None
    hub: Hub = field(default_factory=Hub)
    hung: threading.Event = field(default_factory=threading.Event)
    unhealthy: bool = False
    tls_context: Any = None
    """The ssl.SSLContext STARTTLS uses (tls.py); None: no certificate loaded, STARTTLS not offered."""

    def block_if_hung(self) -> None:
        """After POST /_standin/hang, everything blocks forever (a wedged server)."""
        if self.hung.is_set():
            threading.Event().wait()


def app_from_environment(config_path: Path) -> App:
    """Build the context from ``--config`` and the STALWART_*/STANDIN_* variables."""
    configured = config_path.exists()
    data_dir = Path(os.environ.get("STANDIN_DATA", "/var/lib/stalwart"))
    if configured and "STANDIN_DATA" not in os.environ:
        store = json.loads(config_path.read_text("utf-8"))
        if isinstance(store, dict) and isinstance(store.get("path"), str):
            data_dir = Path(store["path"])
    admin = os.environ.get("STALWART_RECOVERY_ADMIN", "")
    login, sep, password = admin.partition(":")
    http_bind = split_hostport(os.environ.get("STANDIN_HTTP", "0.0.0.0:8080"), "0.0.0.0")
    smtp_bind = split_hostport(os.environ.get("STANDIN_SMTP", "0.0.0.0:25"), "0.0.0.0")
    relay_text = os.environ.get("STANDIN_RELAY")
    relay = split_hostport(relay_text, "127.0.0.1") if relay_text else None
    public = os.environ.get("STALWART_PUBLIC_URL") or f"http://{os.environ.get('STANDIN_HTTP', '0.0.0.0:8080')}"
    state = State(data_dir)
    bootstrap = state.data.get("bootstrap") or {}
    hostname = os.environ.get("STALWART_HOSTNAME") or bootstrap.get("serverHostname") or "localhost"
    return App(
        config_path=config_path,
        configured=configured,
        state=state,
        admin_login=login if sep else None,
        admin_password=password if sep else None,
        hostname=hostname,
        public_url=public.rstrip("/"),
        http_bind=http_bind,
        smtp_bind=smtp_bind,
        relay=relay,
    )
