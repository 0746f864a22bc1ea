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
import collections
import contextlib
import ipaddress
import logging
import ssl
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from appliance.config import ApplianceConfig, SmtpConfig, parse_hostport
from appliance.gate import Envelope, reasons
from appliance.inbound.reception import Reception
from appliance.inbound.replies import smtp_reply
from appliance.inbound.smtp_data import CHUNK_END, TOO_MUCH_DATA, DataStream
from appliance.mail import Unreadable
from appliance.reports import is_report_recipient, take_report

log = logging.getLogger("appliance.inbound.smtp")

TEMPFAIL = "451 4.3.0 Temporary failure, try again later"
"""The reply when a message could not be decided and recorded: the sender retries."""
ONE_AGENT = "452 4.5.3 One agent per transaction, send again for this recipient"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down, try again later\r\n"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
TOO_MANY_FROM_YOU = b"421 4.7.0 Too many connections from your address, try again later\r\n"
ACCEPT_ERROR_INTERVAL = 60.0
"""Seconds between two log lines saying accept() failed (asyncio retries every second)."""
STOP_GRACE = 30.0
"""Seconds ``SmtpServer.stop`` waits for transactions in flight before closing them anyway."""

# aiosmtpd's stock replies, given the RFC 3463 enhanced codes the rest of the intake uses.
_STOCK_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "500 Command line too long": "500 5.5.2 Command line too long",
}



class IntakeHandler:
    """aiosmtpd hooks: recipients are agents, one per transaction; DATA goes through the gate.

    With ``reports``, the DMARC report address (``appliance.reports.is_report_recipient``) is a
    recipient too, in a transaction of its own: its mail is kept as a report and meets no gate.
    """

    def __init__(self, reception: Reception, *, max_recipients: int,
                 reports: ApplianceConfig | None = None) -> None:
        self.reception = reception
        self.max_recipients = max_recipients
        self.reports = reports

    def _is_report(self, address: str) -> bool:
        return self.reports is not None and is_report_recipient(address, self.reports)

    async def handle_RCPT(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        # RFC 5321 4.5.3.1.8: a bounded recipient buffer; every RCPT of the transaction counts,
        # refused ones too, so a transaction cannot probe addresses without end.
        tried = getattr(envelope, "rcpt_commands", 0) + 1
        envelope.rcpt_commands = tried  # type: ignore[attr-defined]
        if tried > self.max_recipients:
            return TOO_MANY_RECIPIENTS
        if not (self.reception.is_agent(address) or self._is_report(address)):
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
        if self._is_report(envelope.rcpt_tos[0]):
            return await self._take_report(raw, envelope.rcpt_tos[0])
        facts = _envelope(session, envelope)
        client_ip = facts.client_ip
        try:
            received = await self.reception.receive(facts, raw, agent=envelope.rcpt_tos[0],
                                                    intake="smtp")
        except Exception:
            # Never a 250 for what is not on disk: the sender keeps the message and retries.
            log.exception("could not decide or record a message from %s for %s", client_ip,
                          envelope.rcpt_tos[0])
            return TEMPFAIL
        decision = received.decision
        reply = smtp_reply(decision)
        text = _printable(reply.text)
        if 200 <= reply.code < 300:
            text += f" (id {decision.decision_id})"
        elif decision.reason in _SAY_WHY:
            # The sender's user reads what is wrong with the message; bounded, it may quote the message.
            text += ": " + _printable(decision.detail)[:200]
        return f"{reply.code} {reply.enhanced} {text}"

    async def _take_report(self, raw: bytes, address: str) -> str:
        try:
            outcome = await take_report(self.reception.db, raw)
        except Exception:
            log.exception("could not record a DMARC report for %s", address)
            return TEMPFAIL
        # RFC 7489 7.2: reports are best effort; a reporter is not bounced for a report we cannot read.
        return f"250 2.0.0 Report {outcome.state}"

    async def refused_in_data(self, session: SmtpSession, envelope: SmtpEnvelope, refusal: Unreadable,
                              size: int) -> None:
        """Audit a message aiosmtpd refused while receiving it (too much data, a line too long)."""
        if not envelope.rcpt_tos or self._is_report(envelope.rcpt_tos[0]):
            return
        try:
            await self.reception.receive(_envelope(session, envelope), b"", agent=envelope.rcpt_tos[0],
                                         intake="smtp", refused=refusal, size=size)
        except Exception:  # the client is refused either way; the log says the audit row is missing
            log.exception("could not audit a refused message for %s", envelope.rcpt_tos[0])


_SAY_WHY = frozenset({reasons.MALFORMED_MESSAGE, reasons.MESSAGE_TOO_COMPLEX, reasons.MESSAGE_TOO_LARGE})


def _envelope(session: SmtpSession, envelope: SmtpEnvelope) -> Envelope:
    peer: Any = session.peer
    mail_from = envelope.mail_from or ""
    return Envelope(
        client_ip=str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or ""),
        helo=session.host_name or "",
        mail_from="" if mail_from == "<>" else mail_from,
        rcpt_to=[r.lower() for r in envelope.rcpt_tos],
    )


def _printable(text: str) -> str:
    """One ASCII line: a reply must not carry CR/LF, and aiosmtpd encodes replies as ASCII."""
    return " ".join(text.split()).encode("ascii", "replace").decode("ascii")


class _Connection(SMTP):
    """One SMTP session: aiosmtpd's protocol, our DATA phase, and the server's bookkeeping."""

    line_length_limit = 64 * 1024
    """The stream buffer's limit: how much DATA one read may take (the transport pauses at twice
    this). Command lines stay bounded by aiosmtpd's ``command_size_limit`` check (500)."""

    def __init__(self, handler: IntakeHandler, *, owner: SmtpServer, data_timeout: float,
                 **options: Any) -> None:
        super().__init__(handler, **options)
        self._owner = owner
        self._intake = handler
        self._data_timeout = data_timeout
        self.in_data = False
        self.client: str | None = None
        """The client's address group while admitted (see ``SmtpServer.admit``); None if refused."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is None and self.transport is None:  # a new connection, not STARTTLS
            peer = transport.get_extra_info("peername")
            refusal = self._owner.admit(self, peer[0] if isinstance(peer, tuple) and peer else "")
            if refusal is not None:
                # RFC 5321 3.1: a server may answer 421 at connection time and close.
                with contextlib.suppress(Exception):
                    transport.write(refusal)  # type: ignore[attr-defined]
                transport.close()
                return
        super().connection_made(transport)

    @property
    def busy(self) -> bool:
        """Inside a mail transaction (after MAIL, or while DATA is received and decided)."""
        return self.in_data or bool(self.envelope is not None and self.envelope.mail_from)

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd's own DATA reads line by line in Python (about 35 ms of CPU per megabyte);
        # this one reads in chunks and leaves the bytes to appliance.inbound.smtp_data.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        # aiosmtpd restarts its one timer only when a command arrives, so without this a whole
        # DATA transfer would be bounded by the command timeout. RFC 5321 4.5.3.2.5-6 (3 minutes
        # per data block, 10 for the reply to the final dot): data_timeout bounds the whole of it,
        # so a slow client cannot hold a connection for ever.
        self._reset_timeout(self._data_timeout)
        self.in_data = True
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            data = await self._receive_data()
            if data is None:
                return
            refusal = data.refusal()
            if refusal is not None:
                limit = self.data_size_limit or 0
                await self._intake.refused_in_data(
                    self.session, self.envelope, refusal.unreadable,
                    limit + 1 if refusal is TOO_MUCH_DATA else 0)
                self.envelope = self._create_envelope()  # the transaction is over
                await self.push(refusal.reply)
                return
            raw = data.message()
            self.envelope.content = self.envelope.original_content = raw
            status = await self._intake.handle_DATA(self, self.session, self.envelope)
            self.envelope = self._create_envelope()
            await self.push(status)
        finally:
            self.in_data = False
            if self.transport is not None:
                self._reset_timeout()  # back to the command timeout until the next command

    async def _receive_data(self) -> DataStream | None:
        """Read up to the end of DATA, no further (a pipelined command may follow); None: closed."""
        data = DataStream(self.data_size_limit or 0)
        reader = self._reader
        try:
            while not data.ended:
                try:
                    chunk = await reader.readuntil(CHUNK_END)
                except asyncio.LimitOverrunError as overrun:
                    # No CHUNK_END in a whole buffer: take what cannot begin one and read on.
                    chunk = await reader.read(overrun.consumed)
                except asyncio.IncompleteReadError:
                    return None  # the client closed in the middle of the data
                taken = data.feed(chunk)
                assert taken == len(chunk), "readuntil(CHUNK_END) never reads past the data"
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        return data

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if status == "250-AUTH ":
                return  # an MX that authenticates no one does not advertise AUTH
            await super().push(_STOCK_REPLIES.get(status, status))
        else:
            await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        if self.client is None:  # refused at connection time: aiosmtpd never started
            self._owner._forget(self)
            return
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
        self._per_client: collections.Counter[str] = collections.Counter()
        self._admitted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_errors_logged = -ACCEPT_ERROR_INTERVAL
        self.port = 0
        self.refused_connections = 0
        """Connections answered 421 for being over a cap (a metric)."""

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._quiet_accept_errors(loop)
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

    def admit(self, connection: _Connection, ip: str) -> bytes | None:
        """Count a new client in; the 421 line to send instead when a cap is reached."""
        client = _client_group(ip)
        if self._admitted >= self.config.max_connections:
            self.refused_connections += 1
            return TOO_MANY_CONNECTIONS
        if self._per_client[client] >= self.config.max_connections_per_ip:
            self.refused_connections += 1
            return TOO_MANY_FROM_YOU
        self._per_client[client] += 1
        self._admitted += 1
        connection.client = client
        return None

    def _quiet_accept_errors(self, loop: asyncio.AbstractEventLoop) -> None:
        """Out of file descriptors, asyncio logs every failed accept(); say it once per interval."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
                now = loop.time()
                if now - self._accept_errors_logged >= ACCEPT_ERROR_INTERVAL:
                    self._accept_errors_logged = now
                    log.error("SMTP cannot accept connections: %s (%d open; said once per %.0f s)",
                              context.get("exception"), len(self._connections), ACCEPT_ERROR_INTERVAL)
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def _forget(self, connection: _Connection) -> None:
        if connection.client is not None and connection in self._connections:
            self._admitted -= 1
            self._per_client[connection.client] -= 1
            if self._per_client[connection.client] <= 0:
                del self._per_client[connection.client]
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


def _client_group(ip: str) -> str:
    """The unit a per-client cap counts: the address, or its /64 for IPv6 (one host's usual share)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)


def _tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    if not (config.tls_cert and config.tls_key):
        return None
    # Purpose.CLIENT_AUTH: a server-side context that asks no client certificate.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def _enough_descriptors(config: SmtpConfig) -> None:
    """Raise the soft descriptor limit so the connection caps, not the kernel, bound the sessions."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = config.max_connections + 256  # the database, HTTP clients, webhooks, readers
        if soft != resource.RLIM_INFINITY and soft < wanted:
            raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            if raised < wanted:
                log.warning("only %d file descriptors allowed (hard limit); smtp.max_connections = %d may "
                            "run out of them", raised, config.max_connections)
    except (ImportError, ValueError, OSError) as exc:
        log.warning("could not check the file descriptor limit: %s", exc)


async def start_smtp_server(config: SmtpConfig, reception: Reception, *, hostname: str,
                            reports: ApplianceConfig | None = None) -> SmtpServer:
    """Listen on ``config.listen`` in the running event loop; await ``stop()`` at shutdown.

    ``reports``: the configuration whose DMARC report address this server takes reports for (None: none).
    """
    _enough_descriptors(config)
    host, port = parse_hostport(config.listen, field="smtp.listen")
    handler = IntakeHandler(reception, max_recipients=config.max_recipients, reports=reports)
    server = SmtpServer(config, handler, hostname=hostname, tls_context=_tls_context(config))
    await server.start(host, port)
    return server
