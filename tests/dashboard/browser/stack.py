"""What a browser test runs against: a real appliance (a subprocess), its DNS, and a webhook receiver.

The appliance is ``appliance run`` as ``tests/e2e`` runs it, in sandbox mode over a temporary
directory; mail goes in over real SMTP and its webhooks out to a real HTTP receiver, so what a
page shows and what its buttons do are the real thing end to end.
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.delivery.receiver import Answer, Received, WebhookReceiver
from tests.dnsserver import serve_zone
from tests.e2e.harness import ApplianceProcess, write_config

AGENT = "agent@example.test"
ADMIN_TOKEN = "admin-test-token"
"""The admin token ``ApplianceProcess`` gives the appliance: what the operator logs in with."""
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
capabilities = ["read_calendar"]

[[senders]]
match = { domain = "held.example" }
action = "quarantine"
capabilities = ["read_calendar"]
"""
"""example.net is let in, held.example quarantined, anyone else bounced."""


class Switchboard:
    """The receiver's answers: those queued with ``answer_next`` first, in order, then 200."""

    def __init__(self) -> None:
        self._queued: list[Answer] = []
        self._lock = threading.Lock()

    def answer_next(self, *answers: Answer) -> None:
        with self._lock:
            self._queued.extend(answers)

    def __call__(self, index: int, request: Received) -> Answer:
        with self._lock:
            return self._queued.pop(0) if self._queued else Answer()


class Probe:
    """An HTTP server that answers anything 204 and records the path of every request (a script's beacon)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                probe.paths.append(self.path)
                self.send_response(204)
                self.send_header("access-control-allow-origin", "*")
                self.end_headers()

            do_GET = do_POST = do_OPTIONS = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Stack:
    """The running appliance and its webhook receiver."""

    def __init__(self, appliance: ApplianceProcess, receiver: WebhookReceiver, switchboard: Switchboard) -> None:
        self.appliance = appliance
        self.receiver = receiver
        self.switchboard = switchboard
        self.base_url = f"http://127.0.0.1:{appliance.http_port}"

    def send(self, sender: str, subject: str, text: str = "Hello.\r\n", *, html: str | None = None,
             message_id: str | None = None) -> int:
        """SMTP the message to the agent; the SMTP reply code (a bounce is an answer too)."""
        headers = (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: {subject}\r\n"
                   f"Message-ID: {message_id or f'<{abs(hash((sender, subject)))}@x.example>'}\r\n")
        if html is None:
            raw = f"{headers}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"
        else:
            boundary = "b0undary"
            raw = (f"{headers}MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary={boundary}\r\n\r\n"
                   f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                   f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--{boundary}--\r\n")
        with smtplib.SMTP("127.0.0.1", self.appliance.smtp_port, timeout=10) as client:
            try:
                client.sendmail(sender, [AGENT], raw.encode())
            except smtplib.SMTPDataError as refused:
                return int(refused.smtp_code)
        return 250


@contextlib.contextmanager
def running_stack(directory: Path, *, policy: str = POLICY) -> Iterator[Stack]:
    """An appliance over ``directory`` with ``policy`` for AGENT, delivering to a fresh receiver."""
    switchboard = Switchboard()
    with serve_zone([]) as dns, WebhookReceiver(switchboard) as receiver:
        config = write_config(directory, policy=policy, agent=AGENT, nameservers=[dns.address],
                              webhook_url=receiver.url)
        appliance = ApplianceProcess(config, env={"AGENT_WEBHOOK_SECRET": WEBHOOK_SECRET})
        try:  # not ``with``: a start that fails must still stop the process it started
            appliance.start()
            yield Stack(appliance, receiver, switchboard)
        finally:
            appliance.__exit__(None, None, None)
