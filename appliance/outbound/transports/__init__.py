"""How mail leaves: one ``Transport`` per ``[outbound] transport`` (capture, smarthost, direct).

A transport makes one delivery attempt and says what happened
(``DeliveryOutcome``); it decides nothing about retries and writes nothing:
the worker records the outcome and ``appliance.outbound.retry`` plans what
comes next.
"""

from __future__ import annotations

__all__ = ["CaptureTransport", "DirectTransport", "SmarthostTransport", "StalwartTransport", "Transport",
           "make_transport"]

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from appliance.config import ApplianceConfig
from appliance.mailauth.dns import Resolver
from appliance.outbound.model import Delivery, DeliveryOutcome
from appliance.outbound.mtasts import MtaSts
from appliance.outbound.transports.capture import CaptureTransport
from appliance.outbound.transports.direct import DirectTransport
from appliance.outbound.transports.smarthost import SmarthostTransport
from appliance.outbound.transports.stalwart import StalwartTransport
from appliance.store.database import Database

if TYPE_CHECKING:
    from appliance.inbound.reception import Reception


class Transport(Protocol):
    """Makes delivery attempts."""

    name: str

    async def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        """One attempt for one recipient domain's share of a message; never raises for what peers do."""
        ...

    async def aclose(self) -> None:
        """Wait for what the transport still does in the background (QUITs), at shutdown."""
        ...


def make_transport(config: ApplianceConfig, *, reception: Reception | None, resolver: Resolver,
                   environ: Mapping[str, str] | None = None, tls_context: ssl.SSLContext | None = None,
                   db: Database | None = None) -> Transport:
    """The transport ``config`` names. ``reception`` is the inbound gate (``capture`` hands local mail to it);
    ``db`` holds the appliance's Stalwart keys (``stalwart``).

    ``tls_context`` verifies peers' certificates (the system's trust store when None).
    """
    outbound = config.outbound
    if outbound.transport == "stalwart":
        if db is None or not config.stalwart.jmap_url:
            raise ValueError("[outbound] transport = \"stalwart\" needs the database and [stalwart] jmap_url")
        return StalwartTransport(db, config.stalwart.jmap_url, timeout=config.stalwart.timeout)
    if outbound.transport == "capture":
        return CaptureTransport(reception, hostname=config.hostname)
    if outbound.transport == "smarthost":
        return SmarthostTransport(outbound, hostname=config.hostname, environ=environ, tls_context=tls_context)
    return DirectTransport(resolver, hostname=config.hostname, mta_sts=MtaSts(resolver, ssl_context=tls_context),
                           tls_context=tls_context, connect_timeout=outbound.connect_timeout)
