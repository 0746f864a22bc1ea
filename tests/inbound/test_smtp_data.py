"""The DATA phase of the SMTP intake, byte for byte, over real loopback SMTP.

These tests pin what the intake stores and answers for the awkward cases of RFC 5321 4.5.2
(dot-stuffing, the terminator) and the size limit, so a faster DATA reader can be checked
against the behaviour of aiosmtpd's line-by-line one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from appliance.runtime import Runtime
from tests.conftest import AGENT
from tests.inbound import test_smtp
from tests.inbound.test_smtp import Dialog, StartSmtp, decision_id_of, message, stored

# The real server and hand-driven client fixtures of test_smtp, shared rather than copied.
start_smtp = test_smtp.start_smtp
dialogs = test_smtp.dialogs

Dialogs = Callable[[int], Awaitable[Dialog]]


async def open_data(start_smtp: StartSmtp, dialogs: Dialogs, **config: object) -> Dialog:
    server = await start_smtp(**config)
    dialog = await dialogs(server.port)
    await dialog.command("EHLO client.example.net")
    return dialog


async def begin_data(dialog: Dialog) -> None:
    assert (await dialog.command("MAIL FROM:<alice@example.net>")).startswith("250")
    assert (await dialog.command(f"RCPT TO:<{AGENT}>")).startswith("250")
    assert (await dialog.command("DATA")).startswith("354")


async def raw_of(runtime: Runtime, reply: str) -> bytes:
    row = await stored(runtime, decision_id_of(reply))
    assert row is not None
    return bytes(row[2])


async def test_dot_stuffed_lines_at_start_middle_and_end_lose_one_dot(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    body = b".first\r\nmiddle\r\n..\r\n.\r\n...three\r\na . lone dot.\r\nx.\r\n.last\r\n"
    raw = message(body=body.decode())
    reply = await dialog.transaction("alice@example.net", [AGENT], raw)  # stuffs each line
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(raw)


async def test_a_dot_line_the_client_did_not_stuff_loses_its_dot(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    await dialog.send(message(body=".unstuffed\r\n") + b".\r\n")
    reply = await dialog.reply()
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(message(body="unstuffed\r\n"))


@pytest.mark.parametrize("cut", range(1, 5))
async def test_the_terminator_split_across_packets_ends_the_data(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs, cut: int
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    data = message(body="end\r\n") + b".\r\n"
    split = len(data) - 5 + cut  # a cut inside "\r\n.\r\n"
    await dialog.send(data[:split])
    await asyncio.sleep(0.05)  # two packets, not one
    await dialog.send(data[split:])
    reply = await dialog.reply()
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(message(body="end\r\n"))


async def test_the_terminator_sent_byte_by_byte_ends_the_data(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    await dialog.send(message(body="slow\r\n"))
    for byte in b".\r\n":
        await asyncio.sleep(0.02)
        await dialog.send(bytes([byte]))
    reply = await dialog.reply()
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(message(body="slow\r\n"))


async def test_bare_lf_and_bare_cr_do_not_end_lines_or_the_data(
    start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    # Neither "\n.\n" nor "\r.\r" is the terminator: only "\r\n.\r\n" is (RFC 5321 4.1.1.4).
    await dialog.send(message(body="a\n.\nb\r.\rc\r\n") + b".\r\n")
    reply = await dialog.reply()
    assert reply == BARE_LINE_ENDS_REPLY, reply
    assert (await dialog.command("NOOP")).startswith("250")


async def test_an_empty_message_is_answered_and_the_session_goes_on(
    start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    await dialog.send(b".\r\n")
    reply = await dialog.reply()
    assert reply == EMPTY_MESSAGE_REPLY, reply
    assert (await dialog.command("NOOP")).startswith("250")


async def test_exactly_the_size_limit_is_taken_and_one_byte_more_is_552(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    raw = message(body="fits\r\n")
    dialog = await open_data(start_smtp, dialogs, max_message_size=len(raw))
    await begin_data(dialog)
    await dialog.send(raw + b".\r\n")
    reply = await dialog.reply()
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(raw)
    await begin_data(dialog)
    await dialog.send(message(body="fitsX\r\n") + b".\r\n")
    assert (await dialog.reply()).startswith("552 5.3.4 ")
    # The session goes on after the refusal.
    again = await dialog.transaction("alice@example.net", [AGENT], raw)
    assert again.startswith("250 "), again


async def test_the_size_limit_counts_the_stuffing_dots(
    start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    raw = message(body="fits\r\n")
    dialog = await open_data(start_smtp, dialogs, max_message_size=len(raw))
    await begin_data(dialog)
    await dialog.send(message(body="..fit\r\n") + b".\r\n")  # unstuffed it fits; sent it is one over
    assert (await dialog.reply()).startswith("552 5.3.4 ")


async def test_a_huge_message_arrives_whole(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    lines = "".join(f"{n:08d} " + "z" * 66 + "\r\n" for n in range(40_000))  # about 3 MB
    raw = message(body=lines)
    dialog = await open_data(start_smtp, dialogs, max_message_size=len(raw) + 1)
    reply = await dialog.transaction("alice@example.net", [AGENT], raw)
    assert reply.startswith("250 "), reply
    assert (await raw_of(runtime, reply)).endswith(raw)


async def test_a_command_pipelined_after_the_final_dot_is_answered(
    runtime: Runtime, start_smtp: StartSmtp, dialogs: Dialogs
) -> None:
    dialog = await open_data(start_smtp, dialogs)
    await begin_data(dialog)
    raw = message(body="then quit\r\n")
    await dialog.send(raw + b".\r\nNOOP\r\nMAIL FROM:<bob@example.net>\r\n")
    reply = await dialog.reply()
    assert reply.startswith("250 "), reply
    assert (await dialog.reply()).startswith("250")  # NOOP
    assert (await dialog.reply()).startswith("250")  # MAIL
    assert (await raw_of(runtime, reply)).endswith(raw)


BARE_LINE_ENDS_REPLY = (
    "550 5.6.0 Malformed message: bare CR (not followed by LF) at byte 148: readers would disagree"
    " on where lines end"
)
"""The one rule for bare CR/LF (appliance.mail) refuses it; the DATA reader passed it on whole."""
EMPTY_MESSAGE_REPLY = "550 5.6.0 Malformed message: expected exactly one From header, found 0"
"""An empty message reaches the gate (as b"") and is refused there, not by the DATA reader."""
