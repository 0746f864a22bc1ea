"""The embedded SMTP intake over real loopback SMTP, with a real Reception on a temporary DuckDB."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme

from appliance.config import SmtpConfig
from appliance.inbound.reception import Received
from appliance.inbound.smtp import SmtpServer, start_smtp_server
from appliance.modes.sandbox import SandboxMode
from appliance.runtime import Runtime
from tests.conftest import AGENT, HOSTNAME, OTHER_AGENT

StartSmtp = Callable[..., Awaitable[SmtpServer]]


def message(
    sender: str = "alice@example.net",
    *,
    subject: str = "Hello",
    body: str = "Hi.\r\n",
    message_id: str = "<m1@example.net>",
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: {AGENT}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 6 Jan 2025 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n\r\n{body}"
    ).encode()


@pytest.fixture
async def start_smtp(runtime: Runtime) -> AsyncIterator[StartSmtp]:
    """``await start_smtp(**smtp_config)``: an SMTP server on 127.0.0.1:0 over runtime.reception."""
    servers: list[SmtpServer] = []

    async def start(**options: Any) -> SmtpServer:
        config = SmtpConfig(**{"listen": "127.0.0.1:0", **options})
        server = await start_smtp_server(config, runtime.reception, hostname=HOSTNAME)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


class Dialog:
    """A hand-driven SMTP client: send exact bytes, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.banner = ""

    @classmethod
    async def open(cls, port: int) -> Dialog:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        dialog = cls(reader, writer)
        dialog.banner = await dialog.reply()
        return dialog

    async def reply(self, wait: float = 5.0) -> str:
        lines: list[str] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait)
            if not line:
                raise ConnectionError("connection closed; got so far: " + "".join(lines))
            lines.append(line.decode())
            if line[3:4] != b"-":
                return "".join(lines).rstrip("\r\n")

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> str:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def transaction(self, sender: str, recipients: list[str], data: bytes) -> str:
        """MAIL, RCPT..., DATA with ``data`` dot-stuffed here; the reply to the final dot."""
        assert (await self.command(f"MAIL FROM:<{sender}>")).startswith("250")
        for rcpt in recipients:
            assert (await self.command(f"RCPT TO:<{rcpt}>")).startswith("250")
        assert (await self.command("DATA")).startswith("354")
        stuffed = b"".join(
            b"." + line if line.startswith(b".") else line
            for line in data.splitlines(keepends=True)
        )
        await self.send(stuffed + b".\r\n")
        return await self.reply()

    async def closed(self, wait: float) -> bytes:
        """What the server still sends until it closes the connection (fails after ``wait`` s)."""
        return await asyncio.wait_for(self.reader.read(), wait)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def dialogs() -> AsyncIterator[Callable[[int], Awaitable[Dialog]]]:
    opened: list[Dialog] = []

    async def open_dialog(port: int) -> Dialog:
        dialog = await Dialog.open(port)
        opened.append(dialog)
        return dialog

    yield open_dialog
    for dialog in opened:
        await dialog.close()


async def stored(runtime: Runtime, decision_id: str) -> tuple[Any, ...] | None:
    return await runtime.db.read(
        lambda con: con.execute(
            "SELECT m.agent, m.mailbox, m.raw, d.action, d.intake, d.mail_from, d.rcpt_to, "
            "d.client_ip, d.helo FROM decisions d LEFT JOIN messages m USING (decision_id) "
            "WHERE d.decision_id = ?",
            [decision_id],
        ).fetchone()
    )


def decision_id_of(reply: str) -> str:
    assert "(id d" in reply, reply
    return reply.rpartition("(id ")[2].rstrip(")")


async def test_banner_and_ehlo_name_the_host_and_advertise_size_without_auth(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(max_message_size=4096)
    dialog = await dialogs(server.port)
    assert dialog.banner == f"220 {HOSTNAME} ESMTP"
    ehlo = await dialog.command("EHLO client.example.net")
    assert ehlo.splitlines()[0] == f"250-{HOSTNAME}"
    assert "250-SIZE 4096" in ehlo
    assert "AUTH" not in ehlo
    assert "STARTTLS" not in ehlo  # no certificate configured


async def test_accepted_message_is_stored_byte_for_byte_before_the_250(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    woken: list[Received] = []
    runtime.reception.on_committed = woken.append
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    body = (
        ".leading dot survives dot-stuffing\r\n..two dots\r\ntrailing space   \r\n"
        "tab\there\r\nutf-8: caf\u00e9\r\n\r\n"
    )
    raw = (
        b"From: Alice <alice@example.net>\r\nTo: agent@example.test\r\n"
        b"Subject: folded\r\n  across lines\r\nMessage-ID: <exact@example.net>\r\n\r\n"
        + body.encode()
    )
    reply = await dialog.transaction("alice@example.net", [AGENT], raw)
    assert reply.startswith("250 2.0.0 Message accepted (id d"), reply
    row = await stored(runtime, decision_id_of(reply))
    assert row is not None
    agent, mailbox, stored_raw, action, intake, mail_from, rcpt_to, client_ip, helo = row
    assert (agent, mailbox, action, intake) == (AGENT, "inbox", "accept", "smtp")
    assert (mail_from, rcpt_to, client_ip, helo) == (
        "alice@example.net",
        [AGENT],
        "127.0.0.1",
        "client.example.net",
    )
    assert stored_raw.startswith(f"Authentication-Results: {HOSTNAME};".encode())
    assert stored_raw.endswith(raw)  # CRLF kept, dots unstuffed, 8-bit bytes intact
    assert [r.decision.action for r in woken] == ["accept"]


async def test_sent_with_aiosmtplib_and_rejected_by_policy_gets_550_5_7_1(
    runtime: Runtime, start_smtp: StartSmtp
) -> None:
    server = await start_smtp()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False) as client:
        errors, reply = await client.sendmail(
            "bob@example.net", [AGENT], message("bob@example.net")
        )
        assert errors == {}
        assert reply.startswith("2.0.0 Message accepted (id d")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await client.sendmail("eve@stranger.example", [AGENT], message("eve@stranger.example"))
    assert caught.value.code == 550
    assert caught.value.message.startswith("5.7.1 ")
    count = await runtime.db.read(
        lambda con: con.execute(
            "SELECT action, count(*) FROM decisions GROUP BY action ORDER BY action"
        ).fetchall()
    )
    assert count == [("accept", 1), ("bounce", 1)]


async def test_unknown_recipient_is_refused_at_rcpt(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    await dialog.command("MAIL FROM:<alice@example.net>")
    assert (
        await dialog.command("RCPT TO:<nobody@example.test>")
        == "550 5.1.1 <nobody@example.test>: no such agent here"
    )
    assert (await dialog.command("DATA")).startswith("503")  # no recipient was accepted


async def test_second_agent_is_deferred_to_another_transaction(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    await dialog.command("MAIL FROM:<alice@example.net>")
    assert (await dialog.command(f"RCPT TO:<{AGENT}>")).startswith("250")
    assert (
        await dialog.command(f"RCPT TO:<{OTHER_AGENT}>")
        == "452 4.5.3 One agent per transaction, send again for this recipient"
    )
    assert (await dialog.command(f"RCPT TO:<{AGENT.upper()}>")).startswith(
        "250"
    )  # same agent again
    assert (await dialog.command("DATA")).startswith("354")
    await dialog.send(message() + b".\r\n")
    reply = await dialog.reply()
    assert reply.startswith("250 ")
    row = await stored(runtime, decision_id_of(reply))
    assert row is not None and row[6] == [AGENT]
    # The client sends it again for the other agent, in a transaction of its own.
    reply = await dialog.transaction(
        "alice@example.net", [OTHER_AGENT], message(message_id="<m2@x>")
    )
    assert reply.startswith("250 ")


async def test_recipients_beyond_max_recipients_get_452(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(max_recipients=2)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    await dialog.command("MAIL FROM:<alice@example.net>")
    assert (await dialog.command("RCPT TO:<nobody@example.test>")).startswith("550")
    assert (await dialog.command(f"RCPT TO:<{AGENT}>")).startswith("250")
    assert await dialog.command(f"RCPT TO:<{AGENT}>") == "452 4.5.3 Too many recipients"
    await dialog.command("RSET")  # a new transaction starts counting again
    await dialog.command("MAIL FROM:<alice@example.net>")
    assert (await dialog.command(f"RCPT TO:<{AGENT}>")).startswith("250")


async def test_size_is_enforced_at_mail_and_during_data(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(max_message_size=2048)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    assert (await dialog.command("MAIL FROM:<alice@example.net> SIZE=2049")).startswith(
        "552 5.3.4 "
    )
    assert (await dialog.command("MAIL FROM:<alice@example.net> SIZE=1000")).startswith("250")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    await dialog.send(message(body="x" * 70 + "\r\n") * 40 + b".\r\n")  # lied about its size
    assert (await dialog.reply()).startswith("552 5.3.4 ")
    # A refusal that reached DATA is audited with its reason (none for the one refused at MAIL).
    assert await runtime.db.read(
        lambda con: con.execute("SELECT action, reason, size, rcpt_to FROM decisions").fetchall()
    ) == [("bounce", "message_too_large", 2049, [AGENT])]
    # The session goes on: a message that fits is accepted.
    assert (await dialog.transaction("alice@example.net", [AGENT], message())).startswith("250 ")


async def test_overlong_lines_are_refused(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    assert (await dialog.command("NOOP " + "x" * 2000)).startswith("500 5.5.2 ")
    await dialog.command("MAIL FROM:<alice@example.net>")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    # RFC 5321 4.5.3.1.6: 998 octets of text plus CRLF.
    await dialog.send(message(body="y" * 1200 + "\r\n") + b".\r\n")
    assert (await dialog.reply()).startswith("500 5.5.2 Line too long")


async def test_idle_client_is_disconnected_after_command_timeout(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(command_timeout=0.3)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    started = asyncio.get_running_loop().time()
    await dialog.closed(wait=3)
    assert asyncio.get_running_loop().time() - started < 2


async def test_slow_data_is_cut_at_data_timeout(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(command_timeout=10, data_timeout=0.4)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    await dialog.command("MAIL FROM:<alice@example.net>")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    await dialog.send(b"From: alice@example.net\r\n")  # ...and never finishes
    await dialog.closed(wait=3)


async def test_data_transfer_may_outlast_the_command_timeout(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(command_timeout=0.3, data_timeout=5)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    await dialog.command("MAIL FROM:<alice@example.net>")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    for line in message().splitlines(keepends=True):
        await dialog.send(line)
        await asyncio.sleep(0.1)  # 0.7 s in all, longer than the command timeout
    await dialog.send(b".\r\n")
    assert (await dialog.reply()).startswith("250 ")


async def test_starttls_with_a_trusted_certificate(
    tmp_path: Path, runtime: Runtime, start_smtp: StartSmtp
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", HOSTNAME)
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(tmp_path / "cert.pem", append=True)
    server = await start_smtp(
        tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")
    )
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=server.port, start_tls=False, tls_context=client_context
    ) as client:
        await client.ehlo()
        assert client.supports_extension("starttls")
        await client.starttls()
        assert client.get_transport_info("sslcontext") is not None
        await client.ehlo()
        assert not client.supports_extension("starttls")
        assert not client.supports_extension("auth")
        _, reply = await client.sendmail("alice@example.net", [AGENT], message())
    row = await stored(runtime, decision_id_of(reply))
    assert row is not None and row[3] == "accept"


async def test_failure_inside_receive_is_a_451_never_a_250(
    runtime: Runtime,
    start_smtp: StartSmtp,
    dialogs: Callable[[int], Awaitable[Dialog]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Received:
        raise OSError("disk on fire")

    server = await start_smtp()
    monkeypatch.setattr(runtime.reception, "receive", broken)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    with caplog.at_level(logging.ERROR, logger="appliance.inbound.smtp"):
        reply = await dialog.transaction("alice@example.net", [AGENT], message())
    assert reply == "451 4.3.0 Temporary failure, try again later"
    assert "disk on fire" in caplog.text


async def test_null_sender_reaches_the_gate_as_empty_mail_from(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    assert (await dialog.command("MAIL FROM:<>")).startswith("250")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    await dialog.send(message(subject="Delivery Status Notification") + b".\r\n")
    await dialog.reply()
    rows = await runtime.db.read(
        lambda con: con.execute("SELECT mail_from, action FROM decisions").fetchall()
    )
    assert len(rows) == 1 and rows[0][0] == ""
    assert rows[0][1] != "accept"  # loop guard: never dispatched as ordinary mail


async def test_stop_lets_a_transaction_in_flight_finish_and_closes_idle_sessions(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    idle = await dialogs(server.port)
    await idle.command("EHLO idle.example.net")
    busy = await dialogs(server.port)
    await busy.command("EHLO busy.example.net")
    await busy.command("MAIL FROM:<alice@example.net>")
    await busy.command(f"RCPT TO:<{AGENT}>")
    stopping = asyncio.create_task(server.stop())
    assert (await idle.closed(wait=2)).startswith(b"421 4.3.2 ")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)  # no longer accepting
    assert not stopping.done()  # waiting for the transaction
    assert (await busy.command("DATA")).startswith("354")
    await busy.send(message() + b".\r\n")
    assert (await busy.reply()).startswith("250 ")
    assert (await busy.closed(wait=2)).startswith(b"421 ")
    await asyncio.wait_for(stopping, 3)
    assert server.connections == 0


async def test_sandbox_mode_serves_smtp_until_stopped(
    make_config: Callable[..., Any],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = Runtime(make_config(mode="sandbox", smtp={"listen": f"127.0.0.1:{port}"}))
    mode = SandboxMode(runtime)
    await runtime.start()
    try:
        await mode.start_intake()
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
            _, reply = await client.sendmail("alice@example.net", [AGENT], message())
        assert reply.startswith("2.0.0 Message accepted")
    finally:
        await mode.stop_intake()
        await runtime.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_connections_over_the_caps_get_421_and_freed_slots_are_reused(
    start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp(max_connections=3, max_connections_per_ip=2)
    first, second = await dialogs(server.port), await dialogs(server.port)
    assert first.banner.startswith("220") and second.banner.startswith("220")
    third = await dialogs(server.port)
    assert third.banner == "421 4.7.0 Too many connections from your address, try again later"
    assert await third.closed(5) == b""
    await first.close()
    await asyncio.sleep(0.1)  # the server notices the close
    again = await dialogs(server.port)
    assert again.banner.startswith("220")
    assert server.refused_connections == 1


async def test_the_total_cap_counts_every_client(start_smtp: StartSmtp,
                                                 dialogs: Callable[[int], Awaitable[Dialog]]) -> None:
    server = await start_smtp(max_connections=2, max_connections_per_ip=10)
    await dialogs(server.port)
    await dialogs(server.port)
    refused = await dialogs(server.port)
    assert refused.banner == "421 4.7.0 Too many connections, try again later"
    assert server.connections == 2


def test_ipv6_clients_are_counted_by_their_64() -> None:
    from appliance.inbound.smtp import _client_group

    assert _client_group("2001:db8::1") == _client_group("2001:db8::ffff:1") == "2001:db8::/64"
    assert _client_group("2001:db8:0:1::1") != _client_group("2001:db8::1")
    assert _client_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert _client_group("192.0.2.7") == "192.0.2.7"


async def test_malformed_and_overlong_refusals_say_why_and_are_audited(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    bare_cr = message().replace(b"Subject: Hello\r\n", b"Subject: Hello\rX-Evil: 1\r\n")
    reply = await dialog.transaction("alice@example.net", [AGENT], bare_cr)
    assert reply.startswith("550 5.6.0 Malformed message: bare CR"), reply
    await dialog.command("MAIL FROM:<alice@example.net>")
    await dialog.command(f"RCPT TO:<{AGENT}>")
    await dialog.command("DATA")
    await dialog.send(message(body="x" * 2000 + "\r\n") + b".\r\n")
    assert (await dialog.reply()).startswith("500 5.5.2 ")
    rows = await runtime.db.read(
        lambda con: con.execute("SELECT action, reason, detail FROM decisions ORDER BY seq").fetchall())
    assert [r[:2] for r in rows] == [("bounce", "malformed_message"), ("bounce", "malformed_message")]
    assert "bare CR" in rows[0][2] and "over 1000 octets" in rows[1][2]


async def test_smtputf8_is_advertised_and_internationalized_mail_is_accepted(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Callable[[int], Awaitable[Dialog]]
) -> None:
    server = await start_smtp()
    dialog = await dialogs(server.port)
    assert "SMTPUTF8" in await dialog.command("EHLO client.example.net")
    raw = "From: Jörg Müller <jörg@bücher.example>\r\nTo: agent@example.test\r\nSubject: Grüße\r\n\r\nHallo\r\n"
    assert (await dialog.command("MAIL FROM:<jörg@bücher.example> SMTPUTF8".encode())).startswith("250")
    assert (await dialog.command(f"RCPT TO:<{AGENT}>")).startswith("250")
    assert (await dialog.command("DATA")).startswith("354")
    await dialog.send(raw.encode() + b".\r\n")
    reply = await dialog.reply()
    assert not reply.startswith("550 5.6.0"), reply  # not malformed: decided by the policy like any mail
    rows = await runtime.db.read(lambda con: con.execute("SELECT header_from, subject FROM decisions").fetchall())
    assert rows == [("jörg@xn--bcher-kva.example", "Grüße")]


async def test_failed_accepts_are_logged_once_per_interval_not_each_time(
    start_smtp: StartSmtp, caplog: pytest.LogCaptureFixture
) -> None:
    await start_smtp()
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.ERROR, logger="appliance.inbound.smtp")
    for _ in range(1000):  # what asyncio reports for each accept() that fails with EMFILE
        loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                     "exception": OSError(24, "Too many open files")})
    said = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(said) == 1 and "Too many open files" in said[0].getMessage()


async def test_a_decision_whose_commit_fails_is_not_counted_against_the_rate_limit(
    make_config: Callable[..., Any]
) -> None:
    from appliance.gate import Envelope
    from appliance.gate.limits import MINUTE, rate_key

    config = make_config(policies={AGENT: """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
rateLimit = { perMinute = 1 }
"""})
    rt = Runtime(config)
    await rt.start()
    try:
        envelope = Envelope(client_ip="192.0.2.1", helo="mx.example.net", mail_from="alice@example.net",
                            rcpt_to=[AGENT])
        rt.db.close()  # every write now fails at once
        with pytest.raises(Exception, match="closed"):
            await rt.reception.receive(envelope, message(), agent=AGENT, intake="smtp")
        assert rt.reception.limits.count_since(rate_key(AGENT, "example.net"), 0.0 - MINUTE) == 0
    finally:
        await rt.stop()
