"""The sandbox's SMTP intake: aiosmtpd, served from the appliance's own event loop.

The handler implements only ``handle_RCPT`` (is this an agent of ours?) and
``handle_DATA`` (run the gate through ``Reception`` and answer with its
reply); aiosmtpd does the protocol. The reply to DATA is sent only after
``Reception.receive`` returned, that is after the message, its audit row and
its delivery job were committed: a 250 means "on disk".
"""

from __future__ import annotations

__all__ = ["IntakeHandler", "SmtpServer", "start_smtp_server"]

import asyncio
import contextlib
import logging
import ssl
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from appliance.config import SmtpConfig, parse_hostport
from appliance.gate import Envelope
from appliance.intake.reception import Reception

log = logging.getLogger("appliance.intake.smtp")

TEMPFAIL = "451 4.3.0 Temporary failure, try again later"
"""The reply when a message could not be decided and recorded: the sender retries."""
ONE_AGENT = "452 4.5.3 One agent per transaction, send again for this recipient"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"
STOP_GRACE = 30.0
"""Seconds ``SmtpServer.stop`` waits for transactions in flight before closing them anyway."""

# aiosmtpd's stock replies, given the RFC 3463 enhanced codes the rest of the intake uses.
_STOCK_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
}



class IntakeHandler:
    """aiosmtpd hooks: recipients are agents, one per transaction; DATA goes through the gate."""

    def __init__(self, reception: Reception, *, max_recipients: int) -> None:
        self.reception = reception
        self.max_recipients = max_recipients

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        # RFC 5321 4.5.3.1.8: a bounded recipient buffer; every RCPT of the transaction counts,
        # refused ones too, so a transaction cannot probe addresses without end.
        tried = getattr(envelope, "rcpt_commands", 0) + 1
        envelope.rcpt_commands = tried  # type: ignore[attr-defined]
        if tried > self.max_recipients:
            return TOO_MANY_RECIPIENTS
        if not self.reception.is_agent(address):
            return f"550 5.1.1 <{_printable(address)}>: no such agent here"
        agent = address.lower()
        accepted = [a.lower() for a in envelope.rcpt_tos]
        if accepted and agent not in accepted:
            # One decision = one SMTP reply: the reply to DATA is the gate's decision for one
            # agent, and two agents' policies may decide differently. RFC 5321 3.3 lets us
            # refuse this recipient with a 4xx; the client sends it again in a new transaction.
            return ONE_AGENT
        if agent not in accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        # decode_data=False: original_content is the message as sent, CRLF kept, dot-unstuffed.
        raw = envelope.original_content or b""
        peer: Any = session.peer
        client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        mail_from = envelope.mail_from or ""
        facts = Envelope(
            client_ip=client_ip,
            helo=session.host_name or "",
            mail_from="" if mail_from == "<>" else mail_from,
            rcpt_to=[r.lower() for r in envelope.rcpt_tos],
        )
        try:
            received = await self.reception.receive(facts, raw, agent=envelope.rcpt_tos[0],
                                                    intake="smtp")
        except Exception:
            # Never a 250 for what is not on disk: the sender keeps the message and retries.
            log.exception("could not decide or record a message from %s for %s", client_ip,
                          envelope.rcpt_tos[0])
            return TEMPFAIL
        decision = received.decision
        reply = decision.smtp
        text = _printable(reply.text)
        if 200 <= reply.code < 300:
            text += f" (id {decision.decision_id})"
        return f"{reply.code} {reply.enhanced} {text}"


def _printable(text: str) -> str:
    """One ASCII line: a reply must not carry CR/LF, and aiosmtpd encodes replies as ASCII."""
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")


class _Connection(SMTP):
    """One SMTP session: aiosmtpd's protocol plus the DATA timeout and the server's bookkeeping."""

    def __init__(self, handler: IntakeHandler, *, owner: SmtpServer, data_timeout: float,
                 **options: Any) -> None:
        super().__init__(handler, **options)
        self._owner = owner
        self._data_timeout = data_timeout
        self.in_data = False

    @property
    def busy(self) -> bool:
        """Inside a mail transaction (after MAIL, or while DATA is received and decided)."""
        return self.in_data or bool(self.envelope is not None and self.envelope.mail_from)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd restarts its one timer only when a command arrives, so without this a whole
        # DATA transfer would be bounded by the command timeout. RFC 5321 4.5.3.2.5-6 (3 minutes
        # per data block, 10 for the reply to the final dot): data_timeout bounds the whole of it,
        # so a slow client cannot hold a connection for ever.
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self.in_data = False
            if self.transport is not None:
                self._reset_timeout()  # back to the command timeout until the next command

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if status == "250-AUTH ":
                return  # an MX that authenticates no one does not advertise AUTH
            await super().push(_STOCK_REPLIES.get(status, status))
        else:
            await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._owner._forget(self)

    def goodbye(self) -> None:
        """Say 421 and close (RFC 5321 3.8: a server shutting down should answer 421)."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(SHUTTING_DOWN)  # type: ignore[attr-defined]
            transport.close()


class SmtpServer:
    """The listening SMTP server; ``port`` is the bound port (useful when listening on port 0)."""

    def __init__(self, config: SmtpConfig, handler: IntakeHandler, *, hostname: str,
                 tls_context: ssl.SSLContext | None = None, stop_grace: float = STOP_GRACE) -> None:
        self.config = config
        self.handler = handler
        self.hostname = hostname
        self.tls_context = tls_context
        self.stop_grace = stop_grace
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("SMTP listening on %s:%d%s", host, self.port,
                 " (STARTTLS offered)" if self.tls_context else "")

    def _new_connection(self) -> _Connection:
        config = self.config
        connection = _Connection(
            self.handler,
            owner=self,
            data_timeout=config.data_timeout,
            data_size_limit=config.max_message_size,  # SIZE (RFC 1870), at MAIL and during DATA
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self.hostname,
            ident="ESMTP",
            tls_context=self.tls_context,
            require_starttls=False,
            timeout=config.command_timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=asyncio.get_running_loop(),
        )
        self._connections.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        task = connection._handler_coroutine
        if task is not None and not task.done():
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def connections(self) -> int:
        """Open SMTP sessions."""
        return len(self._connections)

    async def stop(self) -> None:
        """Stop accepting; let transactions in flight finish (``stop_grace`` s at most); close."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace
        while self._connections:
            out_of_time = loop.time() >= deadline
            for connection in list(self._connections):
                if out_of_time or not connection.busy:
                    connection.goodbye()
                    if connection.transport is None:  # never started: no connection_lost to come
                        self._connections.discard(connection)
            if out_of_time:
                break
            await asyncio.sleep(0.05)
        handlers = [c._handler_coroutine for c in self._connections]
        tasks = [t for t in [*handlers, *self._tasks] if t is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await server.wait_closed()
        log.info("SMTP server stopped")


def _tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    if not (config.tls_cert and config.tls_key):
        return None
    # Purpose.CLIENT_AUTH: a server-side context that asks no client certificate.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


async def start_smtp_server(config: SmtpConfig, reception: Reception, *, hostname: str) -> SmtpServer:
    """Listen on ``config.listen`` in the running event loop; await ``stop()`` at shutdown."""
    host, port = parse_hostport(config.listen, field="smtp.listen")
    handler = IntakeHandler(reception, max_recipients=config.max_recipients)
    server = SmtpServer(config, handler, hostname=hostname, tls_context=_tls_context(config))
    await server.start(host, port)
    return server
