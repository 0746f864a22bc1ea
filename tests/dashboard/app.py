"""A real appliance (sandbox mode) served over loopback HTTP, fed by real SMTP, with a dashboard login.

``DashboardApp`` is what the dashboard tests (and the browser tests) drive: ``url`` for HTTP,
``send()`` for mail through the embedded SMTP server (the whole pipeline: gate, audit, store,
delivery jobs), ``login()`` for an httpx client holding a session cookie.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from appliance.config import ApplianceConfig
from appliance.modes.sandbox import SandboxMode
from appliance.runtime import Runtime
from tests.api.server import serve

ADMIN_TOKEN = "dashboard-admin-secret"
"""The admin token the fixture's appliance runs with (``TEST_APPLIANCE_ADMIN_TOKEN``)."""
_CSRF = re.compile(r'name="_csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry (the first one)."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field in the page"
    return found.group(1)


@dataclass
class DashboardApp:
    url: str
    smtp_port: int
    runtime: Runtime
    clients: list[httpx.Client] = field(default_factory=list)
    """Every client handed out, closed when the app stops."""

    def client(self) -> httpx.Client:
        """A client with no session (cookies are kept, redirects are not followed)."""
        client = httpx.Client(base_url=self.url, timeout=10)
        self.clients.append(client)
        return client

    def login(self, client: httpx.Client | None = None) -> tuple[httpx.Client, str]:
        """Log in through the form; the client (holding the session cookie) and the session's CSRF token."""
        client = client or self.client()
        form = client.get("/ui/login")
        assert form.status_code == 200, form.text
        done = client.post("/ui/login", data={"_csrf": csrf_of(form.text), "token": ADMIN_TOKEN, "next": "/ui/"})
        assert done.status_code == 303, done.text
        home = client.get("/ui/")
        assert home.status_code == 200, home.text
        return client, csrf_of(home.text)

    def send(self, raw: bytes | str, *, mail_from: str, rcpt: str) -> None:
        """Hand one message to the embedded SMTP server; raises smtplib's error when it is refused."""
        data = raw.encode() if isinstance(raw, str) else raw
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.sendmail(mail_from, [rcpt], data)

    def send_all(self, messages: list[tuple[str, str, str]]) -> list[int]:
        """Several ``(raw, mail_from, rcpt)`` over one SMTP connection; each one's reply code (250, 550...)."""
        codes = []
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            for raw, mail_from, rcpt in messages:
                try:
                    smtp.sendmail(mail_from, [rcpt], raw.encode())
                    codes.append(250)
                except smtplib.SMTPDataError as exc:
                    codes.append(int(exc.smtp_code))
                    smtp.rset()
                except smtplib.SMTPRecipientsRefused as exc:
                    codes.append(int(next(iter(exc.recipients.values()))[0]))
                    smtp.rset()
        return codes

    def offer(self, raw: bytes | str, *, mail_from: str, rcpt: str) -> int:
        """Like ``send``, for mail the gate may refuse: the SMTP reply code of the DATA (or RCPT) stage."""
        try:
            self.send(raw, mail_from=mail_from, rcpt=rcpt)
        except smtplib.SMTPDataError as exc:
            return int(exc.smtp_code)
        except smtplib.SMTPRecipientsRefused as exc:
            return int(next(iter(exc.recipients.values()))[0])
        return 250


@contextmanager
def serve_dashboard(config: ApplianceConfig) -> Iterator[DashboardApp]:
    """``config`` (sandbox mode) served by uvicorn on a free loopback port, with its SMTP server on another."""
    with serve(config) as running:
        mode = running.app.plugins.get(SandboxMode)
        assert mode.smtp_server is not None
        served = DashboardApp(url=running.url, smtp_port=mode.smtp_server.port, runtime=running.runtime)
        try:
            yield served
        finally:
            for client in served.clients:
                client.close()
