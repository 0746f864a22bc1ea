"""One SMTP transaction with one host (aiosmtplib), reported as a ``DeliveryOutcome``.

Shared by the smarthost and direct transports; it decides nothing about
retries (``appliance.outbound.retry`` does), it only says what happened and
whether another host of the domain might do better (``next_host``).

The 250 to DATA is returned at once: QUIT (RFC 5321 4.1.1.10) is sent in the
background, so the worker can commit "sent" before anything else. A crash
between the peer's 250 and that commit sends the message again on restart;
SMTP has no way to close that window (RFC 1047, RFC 5321 6.1: the
receiver's 250 is the hand-over of responsibility, and only the client
knows whether it heard it), so it is kept as short as a commit.
"""

from __future__ import annotations

__all__ = ["Closer", "SmtpPeer", "TlsMode", "Tried", "send_to"]

import asyncio
import contextlib
import logging
import ssl
from typing import Literal

import aiosmtplib
import msgspec

from appliance.outbound.model import Delivery, DeliveryOutcome, RecipientRefusal

log = logging.getLogger("appliance.outbound")

TlsMode = Literal["none", "opportunistic", "verified"]
"""``none``: never STARTTLS; ``opportunistic``: STARTTLS when offered, certificate unchecked (RFC 7435);
``verified``: STARTTLS required and the certificate valid for ``server_hostname`` (else not sent)."""

QUIT_TIMEOUT = 10.0
"""Seconds the background QUIT may take before the connection is simply closed."""


class SmtpPeer(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to connect for one transaction."""

    address: str
    """An IP address, or a host name the system resolves (a smarthost)."""
    port: int
    server_hostname: str
    """The name the certificate must carry (the MX or smarthost name); also names the peer in reports."""
    local_hostname: str
    """Our name in EHLO (the appliance's hostname)."""
    tls: TlsMode
    tls_context: ssl.SSLContext | None = None
    """Verifies ``verified`` TLS (and implicit TLS); the system's trust store when None."""
    implicit_tls: bool = False
    """TLS from the first byte (port 465, RFC 8314 3.3) instead of STARTTLS."""
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    """Seconds for each command's reply, the final dot's included (RFC 5321 4.5.3.2 asks for 5 to 10 minutes)."""
    username: str | None = None
    password: str | None = None

    @property
    def label(self) -> str:
        host = self.server_hostname
        return f"{host}:{self.port}" if host == self.address else f"{host}[{self.address}]:{self.port}"


class Tried(msgspec.Struct, frozen=True, kw_only=True):
    """One host's answer."""

    outcome: DeliveryOutcome
    next_host: bool = False
    """The failure is this host's (no connection, no greeting, 4xx before any recipient, TLS): another MX may do."""
    tls_failed: bool = False
    """STARTTLS was wanted and did not happen (not offered, handshake or certificate failed)."""


class Closer:
    """Ends sessions in the background (QUIT, then close) and can wait for them all (``aclose``)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def end(self, client: aiosmtplib.SMTP, *, polite: bool) -> None:
        if not polite or not client.is_connected:
            client.close()
            return
        task = asyncio.create_task(self._quit(client), name="smtp-quit")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit(timeout=QUIT_TIMEOUT)
        except (aiosmtplib.SMTPException, OSError):
            pass  # the transaction is over either way
        finally:
            client.close()

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _retry(peer: SmtpPeer, detail: str, code: int | None = None, **flags: bool) -> Tried:
    return Tried(outcome=DeliveryOutcome(status="retry", code=code, detail=detail, peer=peer.label), **flags)


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {' '.join(exc.message.split())}"


def _temporary(code: int) -> bool:
    return not 500 <= code < 600  # only 5xx is final (RFC 5321 4.2.1); anything odd is retried


def _xtext(value: str) -> str:
    """RFC 3461 4: characters outside ``!``..``~``, and ``+`` and ``=``, as ``+HH``."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in value)


def _opportunistic() -> ssl.SSLContext:
    """TLS that encrypts without checking who is at the other end (RFC 7435): better than clear text."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _verifying(peer: SmtpPeer) -> ssl.SSLContext:
    context = peer.tls_context or ssl.create_default_context()
    context.minimum_version = max(context.minimum_version, ssl.TLSVersion.TLSv1_2)  # RFC 8461 4.2: 1.2 or later
    return context


async def send_to(peer: SmtpPeer, delivery: Delivery, closer: Closer) -> Tried:
    """Offer ``delivery`` to ``peer`` in one SMTP transaction; never raises for what the peer or network does."""
    verified = peer.tls == "verified"
    implicit = None
    if peer.implicit_tls:
        implicit = _verifying(peer) if verified else _opportunistic()
    client = aiosmtplib.SMTP(
        hostname=peer.address, port=peer.port, local_hostname=peer.local_hostname, timeout=peer.command_timeout,
        start_tls=False, use_tls=peer.implicit_tls, tls_context=implicit)
    polite = False
    try:
        try:
            await client.connect(timeout=peer.connect_timeout)
        except aiosmtplib.SMTPConnectResponseError as exc:  # a greeting other than 220 (RFC 5321 3.1)
            return _retry(peer, f"{peer.label} greeted with {_reply(exc)}", exc.code, next_host=True)
        except (aiosmtplib.SMTPException, OSError) as exc:
            tls = isinstance(exc.__cause__ or exc, ssl.SSLError) and peer.implicit_tls
            return _retry(peer, f"cannot connect to {peer.label}: {_error(exc)}", next_host=True, tls_failed=tls)
        tried = await _transaction(client, peer, delivery, verified)  # cancelled or timed out: closed, no QUIT
        polite = tried.outcome.status == "sent" or not tried.tls_failed
        return tried
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        return _retry(peer, f"{peer.label}: {_error(exc)}", next_host=True)
    finally:
        closer.end(client, polite=polite and client.is_connected)


async def _transaction(client: aiosmtplib.SMTP, peer: SmtpPeer, delivery: Delivery, verified: bool) -> Tried:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError as exc:
        if not 500 <= exc.code < 600 or not client.is_connected:
            return _retry(peer, f"{peer.label} refused EHLO: {_reply(exc)}", exc.code, next_host=True)
        try:
            await client.helo()  # RFC 5321 4.1.1.1: an old server may know HELO only
        except aiosmtplib.SMTPHeloError as again:
            return _retry(peer, f"{peer.label} refused HELO: {_reply(again)}", again.code, next_host=True)
    if peer.tls != "none" and not peer.implicit_tls:
        if not client.supports_extension("starttls"):
            if verified:
                return _retry(peer, f"{peer.label} does not offer STARTTLS: refusing to send in clear "
                                    "(TLS is required for it)", next_host=True, tls_failed=True)
        else:
            try:
                await client.starttls(server_hostname=peer.server_hostname,
                                      tls_context=_verifying(peer) if verified else _opportunistic())
                await client.ehlo()  # RFC 3207 4.2: forget what was learnt before TLS
            except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
                return _retry(peer, f"STARTTLS with {peer.label} failed: {_error(exc)}", next_host=True,
                              tls_failed=True)
    encrypted = client.get_transport_info("sslcontext") is not None
    if peer.username is not None:
        if not encrypted:
            return _retry(peer, f"{peer.label}: refusing to send AUTH credentials in clear (no TLS)")
        try:
            await client.login(peer.username, peer.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the message: retried (Postfix defers too) while the operator fixes them.
            return _retry(peer, f"{peer.label} refused our AUTH: {_reply(exc)}", exc.code)
        except aiosmtplib.SMTPException as exc:
            return _retry(peer, f"{peer.label}: AUTH not possible: {_error(exc)}")
    return await _mail(client, peer, delivery)


async def _mail(client: aiosmtplib.SMTP, peer: SmtpPeer, delivery: Delivery) -> Tried:
    raw = delivery.raw
    options: list[str] = []
    utf8 = not (delivery.mail_from.isascii() and all(r.isascii() for r in delivery.recipients))
    if utf8:
        if not client.supports_extension("smtputf8"):  # RFC 6531 3.5: no downgrade of addresses
            return Tried(outcome=DeliveryOutcome(
                status="failed", code=None, peer=peer.label,
                detail=f"5.6.7 {peer.label} does not support SMTPUTF8, needed for a non-ASCII address"))
        options.append("SMTPUTF8")
    if not raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")  # RFC 6152
    size = client.esmtp_extensions.get("size", "")
    if size.isdigit() and 0 < int(size) < len(raw):  # RFC 1870 6.1: a declared limit is final
        return Tried(outcome=DeliveryOutcome(
            status="failed", code=None, peer=peer.label,
            detail=f"5.3.4 message of {len(raw)} bytes is over the {size}-byte limit {peer.label} declares"))
    if client.supports_extension("size"):
        options.append(f"SIZE={len(raw)}")
    dsn = client.supports_extension("dsn")
    if dsn:
        # RFC 3461: a bounce names our email id (ENVID) and returns headers only, not the whole message.
        options += ["RET=HDRS", f"ENVID={_xtext(delivery.email_id)}"]
    encoding = "utf-8" if utf8 else "ascii"
    try:
        await client.mail(delivery.mail_from, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        if _temporary(exc.code):
            return _retry(peer, f"{peer.label} refused MAIL FROM: {_reply(exc)}", exc.code, next_host=True)
        return _failed(peer, f"{peer.label} refused MAIL FROM: {_reply(exc)}", exc.code)
    accepted: list[str] = []
    refused: list[RecipientRefusal] = []
    for recipient in delivery.recipients:
        try:
            # RFC 3461 4.2: ORCPT makes a DSN name the address we sent to, even after forwarding.
            orcpt = [f"ORCPT=rfc822;{_xtext(recipient)}"] if dsn and recipient.isascii() else None
            await client.rcpt(recipient, options=orcpt, encoding=encoding)
            accepted.append(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            refused.append(RecipientRefusal(address=recipient, code=exc.code, detail=_reply(exc)))
    if not accepted:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.rset()
        last = refused[-1]
        detail = f"{peer.label} refused every recipient: " + "; ".join(f"<{r.address}> {r.detail}" for r in refused)
        if all(not _temporary(r.code or 0) for r in refused):
            return Tried(outcome=DeliveryOutcome(status="failed", code=last.code, detail=detail, peer=peer.label,
                                                 refused=refused))
        return Tried(outcome=DeliveryOutcome(status="retry", code=last.code, detail=detail, peer=peer.label,
                                             refused=refused))
    try:
        response = await client.data(raw)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
        # No 250: not sent. The peer may still have taken it (RFC 1047); no other host this time.
        return _retry(peer, f"{peer.label} did not answer the message: {_error(exc)}")
    except aiosmtplib.SMTPDataError as exc:
        return Tried(outcome=DeliveryOutcome(status="retry" if _temporary(exc.code) else "failed", code=exc.code,
                                             peer=peer.label, refused=refused,
                                             detail=f"{peer.label} refused the message: {_reply(exc)}"))
    return Tried(outcome=DeliveryOutcome(status="sent", code=response.code, peer=peer.label, refused=refused,
                                         detail=f"{response.code} {' '.join(response.message.split())}"))


def _failed(peer: SmtpPeer, detail: str, code: int) -> Tried:
    return Tried(outcome=DeliveryOutcome(status="failed", code=code, detail=detail, peer=peer.label))


def _error(exc: BaseException) -> str:
    """An exception in one line, its cause's words when it only wraps one (a timeout, a refused connect)."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({' '.join(str(cause).split())})" if text else " ".join(str(cause).split())
    if isinstance(exc, TimeoutError) and "time" not in text.lower():
        text = f"timed out {text}".strip()
    return text or type(exc).__name__
