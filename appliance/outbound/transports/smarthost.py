"""``smarthost``: every message goes to one relay (``[outbound] smarthost``), usually port 587.

STARTTLS is required, with the relay's certificate verified against its
name, unless ``require_tls = false`` (then STARTTLS is used when offered,
unverified, and clear text otherwise). Port 465 is TLS from the first byte
(RFC 8314 3.3). AUTH uses the user name and password held in the environment
variables the configuration names, and is never sent in clear.
A relay that cannot be reached, refuses TLS or refuses our credentials is a
temporary failure: the message waits while the operator fixes it.
"""

from __future__ import annotations

__all__ = ["SmarthostTransport"]

import os
import ssl
from collections.abc import Mapping

import msgspec

from appliance.config import OutboundConfig, parse_hostport
from appliance.outbound.model import Delivery, DeliveryOutcome
from appliance.outbound.transports.smtp import Closer, SmtpPeer, send_to

IMPLICIT_TLS_PORT = 465


class SmarthostTransport:
    """Relays through the configured smarthost."""

    name = "smarthost"

    def __init__(self, config: OutboundConfig, *, hostname: str, environ: Mapping[str, str] | None = None,
                 tls_context: ssl.SSLContext | None = None, command_timeout: float = 300.0) -> None:
        if not config.smarthost:
            raise ValueError("[outbound] smarthost (host:port) is required with transport = \"smarthost\"")
        self.host, self.port = parse_hostport(config.smarthost, field="outbound.smarthost")
        self.config = config
        self.hostname = hostname
        self.environ = environ if environ is not None else os.environ
        self.tls_context = tls_context
        """Verifies the relay's certificate (the system's trust store when None)."""
        self.command_timeout = command_timeout
        self._closer = Closer()

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        label = f"{self.host}:{self.port}"
        username = password = None
        for env, what in ((self.config.smarthost_username_env, "user name"),
                          (self.config.smarthost_password_env, "password")):
            if env and not self.environ.get(env):
                return DeliveryOutcome(status="retry", code=None, peer=label,
                                       detail=f"smarthost AUTH {what}: environment variable {env} is not set")
        if self.config.smarthost_username_env:
            username = self.environ[self.config.smarthost_username_env]
            password = self.environ.get(self.config.smarthost_password_env or "", "")
        peer = SmtpPeer(address=self.host, port=self.port, server_hostname=self.host, local_hostname=self.hostname,
                        tls="verified" if self.config.require_tls else "opportunistic", tls_context=self.tls_context,
                        implicit_tls=self.port == IMPLICIT_TLS_PORT, connect_timeout=self.config.connect_timeout,
                        command_timeout=self.command_timeout, username=username, password=password)
        tried = await send_to(peer, delivery, self._closer)
        if tried.tls_failed and peer.tls == "opportunistic" and not peer.implicit_tls and username is None:
            # RFC 7435: opportunistic TLS that fails falls back to clear text, which require_tls = false allows.
            tried = await send_to(msgspec.structs.replace(peer, tls="none"), delivery, self._closer)
        return tried.outcome

    async def aclose(self) -> None:
        await self._closer.aclose()

