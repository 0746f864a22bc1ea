"""SMTP in (configured mode): EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT, with MTA hooks at
every stage they are configured for. Threads, stdlib only."""

from __future__ import annotations

import re
import secrets
import socketserver
import threading
from typing import Any

from app import App
from delivery import deliver
from hooks import Client, Verdict, apply_modifications, request_body, run_hooks
from logs import log
from mailstore import account_by_address, is_local_domain
from message import join_message, split_message

MAX_SIZE = 104857600
_PATH = re.compile(r"^\s*<([^>]*)>(.*)$")


def queue_id() -> str:
    """A queue id in Stalwart's hex form."""
    return secrets.token_hex(8)[:15]


class SmtpSession(socketserver.StreamRequestHandler):
    """One SMTP connection."""

    app: App
    tls = False
    active = 0
    _active_lock = threading.Lock()

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def _verdict_reply(self, verdict: Verdict, default: str) -> tuple[str, bool]:
        if verdict.action in ("reject", "tempfail"):
            return verdict.reply or default, verdict.disconnect
        return verdict.reply or default, verdict.disconnect

    def handle(self) -> None:
        """The command loop."""
        app = self.app
        app.block_if_hung()
        with SmtpSession._active_lock:
            SmtpSession.active += 1
        try:
            self._session()
        except (ConnectionError, OSError):
            pass
        finally:
            with SmtpSession._active_lock:
                SmtpSession.active -= 1

    def _client(self, helo: str | None) -> Client:
        ip, port = self.client_address[:2]
        server_ip, server_port = self.connection.getsockname()[:2]
        return Client(ip=ip, port=port, helo=helo, server_ip=server_ip, server_port=server_port)

    def _session(self) -> None:
        app = self.app
        log("INFO", "smtp.connect", f"connection from {self.client_address[0]}", client=self.client_address[0])
        connect = run_hooks(app, "connect", request_body("connect", self._client(None), None, []))
        if connect.action in ("reject", "tempfail"):
            self._send(connect.reply or "554 5.7.1 Connection rejected.")
            return
        self._send(f"220 {app.hostname} Stalwart ESMTP at your service")
        helo: str | None = None
        mail_from: str | None = None
        rcpts: list[str] = []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            app.block_if_hung()
            command = line.decode("utf-8", "replace").rstrip("\r\n")
            verb, _, argument = command.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                if not argument.strip():
                    self._send("501 5.5.4 Missing hostname.")
                    continue
                verdict = run_hooks(app, "ehlo", request_body("ehlo", self._client(argument.strip()), None, []))
                if verdict.action in ("reject", "tempfail"):
                    reply, disconnect = self._verdict_reply(verdict, "550 5.7.1 Rejected.")
                    self._send(reply)
                    if disconnect:
                        return
                    continue
                helo, mail_from, rcpts = argument.strip(), None, []
                if verb == "HELO":
                    self._send(f"250 {app.hostname} you had me at HELO")
                else:
                    extensions = [f"{app.hostname} you had me at EHLO", f"SIZE {MAX_SIZE}", "8BITMIME",
                                  "PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
                    if app.tls_context is not None and not self.tls:
                        extensions.insert(-1, "STARTTLS")
                    for number, extension in enumerate(extensions):
                        last = number == len(extensions) - 1
                        self._send(f"250{' ' if last else '-'}{extension}")
            elif verb == "STARTTLS":
                if app.tls_context is None or self.tls:
                    self._send("504 5.7.4 Unable to negotiate TLS at this time.")
                    continue
                context = app.tls_context
                self._send("220 2.0.0 Ready to start TLS.")
                self.connection = context.wrap_socket(self.connection, server_side=True)
                self.rfile = self.connection.makefile("rb")
                self.wfile = self.connection.makefile("wb")
                self.tls = True
                helo, mail_from, rcpts = None, None, []  # RFC 3207 4.2: forget what came before
            elif verb == "MAIL":
                if helo is None:
                    self._send("503 5.5.1 Polite people say EHLO first.")
                    continue
                if mail_from is not None:
                    self._send("503 5.5.1 Multiple MAIL commands not allowed.")
                    continue
                match = _PATH.match(argument[5:]) if argument.upper().startswith("FROM:") else None
                if match is None:
                    self._send("501 5.5.4 Invalid sender address.")
                    continue
                size = re.search(r"SIZE=(\d+)", match.group(2), re.IGNORECASE)
                if size and int(size.group(1)) > MAX_SIZE:
                    self._send("552 5.3.4 Message too big for system.")
                    continue
                sender = match.group(1).lower()
                verdict = run_hooks(app, "mail", request_body("mail", self._client(helo), sender, []))
                if verdict.action in ("reject", "tempfail"):
                    reply, disconnect = self._verdict_reply(verdict, "550 5.7.1 Rejected.")
                    self._send(reply)
                    if disconnect:
                        return
                    continue
                mail_from, rcpts = sender, []
                self._send(verdict.reply or f"250 2.1.0 OK <{sender}>")
            elif verb == "RCPT":
                if mail_from is None:
                    self._send("503 5.5.1 MAIL is required first.")
                    continue
                match = _PATH.match(argument[3:]) if argument.upper().startswith("TO:") else None
                if match is None or "@" not in match.group(1):
                    self._send("501 5.5.4 Invalid recipient address.")
                    continue
                rcpt = match.group(1).lower()
                self._send(self._rcpt(helo, mail_from, rcpts, rcpt))
            elif verb == "DATA":
                if not rcpts:
                    self._send("503 5.5.1 RCPT is required first.")
                    continue
                self._send("354 Start mail input; end with <CRLF>.<CRLF>")
                raw = self._read_data()
                reply, disconnect = self._data(helo, mail_from or "", rcpts, raw)
                self._send(reply)
                mail_from, rcpts = None, []
                if disconnect:
                    return
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self._send("250 2.0.0 OK")
            elif verb == "NOOP":
                self._send("250 2.0.0 OK")
            elif verb == "QUIT":
                self._send("221 2.0.0 Bye.")
                return
            else:
                self._send("500 5.5.1 Invalid command.")

    def _rcpt(self, helo: str | None, mail_from: str, rcpts: list[str], rcpt: str) -> str:
        """Hooks first (they run before the mailbox check, as Stalwart does), then the mailbox."""
        app = self.app
        verdict = run_hooks(app, "rcpt", request_body("rcpt", self._client(helo), mail_from, [*rcpts, rcpt]))
        if verdict.action in ("reject", "tempfail"):
            return verdict.reply or "550 5.7.1 Rejected."
        if is_local_domain(app, rcpt) and account_by_address(app, rcpt) is None:
            return "550 5.1.1 Mailbox does not exist."
        if rcpt not in rcpts:
            rcpts.append(rcpt)
        return verdict.reply or f"250 2.1.5 OK <{rcpt}>"

    def _read_data(self) -> bytes:
        lines: list[bytes] = []
        while True:
            line = self.rfile.readline(1 << 20)
            if not line or line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]  # RFC 5321 4.5.2 dot-unstuffing
            lines.append(line)
        return b"".join(lines)

    def _data(self, helo: str | None, mail_from: str, rcpts: list[str], raw: bytes) -> tuple[str, bool]:
        client = self._client(helo)
        return accept_message(self.app, client, mail_from, rcpts, raw)


def accept_message(app: App, client: Client, mail_from: str, rcpts: list[str], raw: bytes,
                   queue: str | None = None) -> tuple[str, bool]:
    """The data stage: hooks, modifications, delivery. The SMTP reply and whether to disconnect."""
    queue = queue or queue_id()
    headers, body = split_message(raw)
    verdict = run_hooks(app, "data", request_body("data", client, mail_from, rcpts, queue,
                                                  (headers, body, len(raw))))
    if verdict.action in ("reject", "tempfail"):
        return verdict.reply or "550 5.7.1 Rejected.", verdict.disconnect
    if verdict.action == "discard":
        log("INFO", "smtp.discarded", f"{queue} discarded by a hook", queueId=queue)
        return verdict.reply or f"250 2.0.0 Message queued with id {queue}.", verdict.disconnect
    headers, body, mail_from, rcpts = apply_modifications(headers, body, mail_from, rcpts, verdict.modifications)
    if verdict.action == "quarantine":
        headers.insert(0, ("X-Quarantine", " true\r\n"))
    deliver(app, client, queue, mail_from, rcpts, join_message(headers, body))
    log("INFO", "smtp.queued", f"{queue} from {mail_from} to {rcpts}", queueId=queue, rcpts=rcpts)
    return verdict.reply or f"250 2.0.0 Message queued with id {queue}.", verdict.disconnect


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def start_smtp(app: App) -> Any:
    """Listen on STANDIN_SMTP in a background thread; the server."""
    SmtpSession.app = app
    server = _Server(app.smtp_bind, SmtpSession)
    threading.Thread(target=server.serve_forever, daemon=True, name="smtp").start()
    return server
