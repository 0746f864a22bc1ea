"""A real SMTP peer on the loopback interface (aiosmtpd, in a thread of its own): answers as it is told.

    with Peer() as peer:                       # 250 to everything
        peer.script.data_reply = "451 4.3.0 try later"
        peer.script.rcpt["bob@example.org"] = "550 5.1.1 no such user"
        peer.script.hang = 30.0                # sits on the final dot that long (or until stopped)
        ...
        assert peer.count("<m1@mx.example.test>") == 1

Every message it answered 250 for is in ``received`` with the time (``time.time()``)
just before the 250 went out, whether it came over TLS, and the MAIL options.
``BlackHole`` is a listener that never speaks (a peer that hangs before its greeting).
"""

from __future__ import annotations

__all__ = ["BlackHole", "Got", "Peer", "Script", "server_context"]

import asyncio
import contextlib
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate for ``names`` issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@dataclass
class Got:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str | None
    tls: bool
    at: float
    mail_options: list[str]
    dsn_options: list[str] = field(default_factory=list)
    """RFC 3461 parameters of MAIL and RCPT (``ENVID=...``, ``RET=...``, ``ORCPT=...``), as sent."""


@dataclass
class Script:
    """How the peer answers (change it at any time; the thread reads it at each command)."""

    greeting_delay: float = 0.0
    mail_reply: str | None = None
    """An answer to MAIL FROM other than 250."""
    rcpt: dict[str, str] = field(default_factory=dict)
    """Lowercased address -> an answer to its RCPT TO other than 250."""
    data_reply: str = "250 2.0.0 Ok: queued"
    data_delay: Callable[[], float] | None = None
    """Seconds to wait before answering each final dot."""
    hang: float = 0.0
    """Seconds to sit on the final dot without answering (ended early by ``stop``)."""


class _Handler:
    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.peer.script.mail_reply:
            return self.peer.script.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.peer.script.rcpt.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        script = self.peer.script
        if script.data_delay is not None:
            await asyncio.sleep(script.data_delay())
        if script.hang:
            assert self.peer.release is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.peer.release.wait(), script.hang)
            return "421 4.3.0 gave up"
        reply = script.data_reply
        if reply.startswith("250"):
            data = envelope.original_content or b""
            found = re.search(rb"^Message-ID:\s*(<[^>\r\n]+>)", data, re.IGNORECASE | re.MULTILINE)
            got = Got(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos), data=data,
                      message_id=found.group(1).decode() if found else None, tls=session.ssl is not None,
                      at=time.time(), mail_options=list(envelope.mail_options),
                      dsn_options=list(getattr(envelope, "dsn_options", [])))
            with self.peer.lock:
                self.peer.received.append(got)
        return reply


class Peer:
    """An SMTP server on ``host`` (a free port unless ``port``), with STARTTLS when ``tls`` is given."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None,
                 users: dict[str, str] | None = None, script: Script | None = None, smtputf8: bool = True,
                 dsn: bool = False) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.users = users
        """user -> password: AUTH (PLAIN, LOGIN) offered after STARTTLS, and required."""
        self.script = script or Script()
        self.smtputf8 = smtputf8
        self.dsn = dsn
        """Offer the DSN extension (RFC 3461) and take its parameters."""
        self.received: list[Got] = []
        self.logins: list[str] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- what it saw --------------------------------------------------------------------------

    def count(self, message_id: str) -> int:
        with self.lock:
            return sum(1 for g in self.received if g.message_id == message_id)

    def messages(self) -> list[Got]:
        with self.lock:
            return list(self.received)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Got]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.messages()
            if len(got) >= n:
                return got
            time.sleep(0.01)
        raise AssertionError(f"the peer got {len(self.messages())} message(s), expected {n}")

    # -- life -----------------------------------------------------------------------------------

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and self.users is not None:
            user = data.login.decode()
            if self.users.get(user) == data.password.decode():
                with self.lock:
                    self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _protocol(self) -> SMTP:
        with self.lock:
            self.connections += 1
        options: dict[str, Any] = {}
        if self.users is not None:
            options.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
        smtp = _Greeting(self, _Handler(self), hostname="peer.example.test", tls_context=self.tls,
                         enable_SMTPUTF8=self.smtputf8, timeout=30, **options)
        return smtp

    def start(self) -> Peer:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self.release = asyncio.Event()
            self._server = loop.run_until_complete(loop.create_server(self._protocol, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name=f"smtp-peer-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the SMTP peer did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if self.release is not None:
            loop.call_soon_threadsafe(self.release.set)
        time.sleep(0.05)  # let a hung DATA answer before the loop stops
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Peer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Greeting(SMTP):
    """aiosmtpd's session, with a greeting that can be slow and, when asked, the DSN extension."""

    def __init__(self, peer: Peer, handler: Any, **options: Any) -> None:
        super().__init__(handler, **options)
        self._peer = peer

    async def _handle_client(self) -> None:
        delay = self._peer.script.greeting_delay
        if delay:
            await asyncio.sleep(delay)
        await super()._handle_client()

    async def smtp_EHLO(self, hostname: str) -> None:
        if not self._peer.dsn:
            await super().smtp_EHLO(hostname)
            return
        original = self.push

        async def push(status: Any) -> None:  # "250 HELP" is the last line: DSN goes before it
            if status == "250 HELP":
                await original("250-DSN")
            await original(status)

        self.push = push  # type: ignore[method-assign]
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self.push = original  # type: ignore[method-assign]

    def _dsn_split(self, arg: str) -> str:
        """Keep RFC 3461 parameters aside (aiosmtpd knows none of them); the rest goes on to aiosmtpd."""
        if not self._peer.dsn or self.envelope is None:
            return arg
        kept, dsn = [], []
        for token in arg.split(" "):
            (dsn if token.upper().split("=")[0] in ("RET", "ENVID", "NOTIFY", "ORCPT") else kept).append(token)
        if dsn:
            options = getattr(self.envelope, "dsn_options", [])
            self.envelope.dsn_options = [*options, *dsn]  # type: ignore[attr-defined]
        return " ".join(kept)

    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(self._dsn_split(arg) if arg else arg)

    async def smtp_RCPT(self, arg: str) -> None:
        await super().smtp_RCPT(self._dsn_split(arg) if arg else arg)


class BlackHole:
    """A listener that takes connections (the kernel does) and never says a word."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket()
        self._socket.bind((host, 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
