"""The DATA phase of the SMTP intake, byte for byte, over real loopback SMTP.

These tests pin what the intake stores and answers for the awkward cases of RFC 5321 4.5.2
(dot-stuffing, the terminator) and the size limit, so a faster DATA reader can be checked
against the behaviour of aiosmtpd's line-by-line one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from appliance.inbound.smtp_data import (
    CHUNK_END,
    LINE_TOO_LONG,
    TOO_MUCH_DATA,
    DataRefusal,
    DataStream,
    unstuff,
)
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


# The DATA phase's core (appliance.inbound.smtp_data), against a line-by-line reading of RFC 5321
# 4.5.2 on random streams cut at random places: the intake's reader cuts at CHUNK_END, the network
# anywhere.

def read_by_lines(stream: bytes, size_limit: int) -> tuple[bytes | DataRefusal, int]:
    """RFC 5321 4.5.2 the slow way: the outcome, and the octets DATA took from the stream."""
    position, lines = 0, []
    while True:
        end = stream.index(b"\r\n", position)
        line, position = stream[position:end], end + 2
        if line == b".":
            break
        lines.append(line)
    offset = 0
    for line in lines:  # the first line to reach 1000 octets, if no later than the size limit
        if len(line) >= 1000 and (not size_limit or offset + 1000 <= size_limit):
            return LINE_TOO_LONG, position
        offset += len(line) + 2
    if size_limit and offset > size_limit:
        return TOO_MUCH_DATA, position
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines), position


def read_by_chunks(stream: bytes, size_limit: int, cuts: list[int]) -> tuple[bytes | DataRefusal, int]:
    data = DataStream(size_limit)
    taken, previous = 0, 0
    for cut in [*cuts, len(stream)]:
        taken += data.feed(stream[previous:cut])
        previous = cut
        if data.ended:
            break
    assert data.ended
    if size_limit:
        assert data.held <= size_limit + 1
    refusal = data.refusal()
    return (refusal if refusal is not None else data.message()), taken


PIECES = [b".", b"..", b"\r\n", b"\r", b"\n", b"x", b"\r\n.", b".\r\n", b"\r\n.\r", b"y" * 997,
          b"z" * 120]


@pytest.mark.parametrize("seed", range(300))
def test_chunked_reading_agrees_with_reading_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 40)))
    stream += b"\r\n.\r\nNOOP\r\n"  # a terminator somewhere, and a pipelined command after it
    cuts = sorted(rng.sample(range(len(stream)), min(len(stream), rng.randrange(0, 12))))
    size_limit = rng.choice([0, 0, rng.randrange(1, len(stream) + 2)])
    assert read_by_chunks(stream, size_limit, cuts) == read_by_lines(stream, size_limit)


@pytest.mark.parametrize("stream", [b".\r\n", b"\r\n.\r\n", b"a\r\n.\r\n", b"..\r\n.\r\n"])
def test_every_cut_of_a_short_stream_ends_in_the_same_place(stream: bytes) -> None:
    expected = read_by_lines(stream + b"QUIT\r\n", 0)
    for cut in range(len(stream) + 1):
        assert read_by_chunks(stream + b"QUIT\r\n", 0, [cut]) == expected


def test_a_client_sending_without_end_holds_only_the_size_limit_in_memory() -> None:
    data = DataStream(1000)
    for _ in range(20_000):
        data.feed(b"w" * 500 + b"\r\n")
    assert (data.held, data.size, data.ended) == (1001, 10_040_000, False)
    data.feed(CHUNK_END)
    assert data.ended and data.refusal() == TOO_MUCH_DATA


def test_a_long_line_refuses_only_if_the_stream_reaches_it_before_the_size_limit() -> None:
    long_line = b"q" * 1000 + b"\r\n"
    assert read_by_chunks(long_line + b".\r\n", 1000, []) == (LINE_TOO_LONG, 1005)
    assert read_by_chunks(long_line + b".\r\n", 999, []) == (TOO_MUCH_DATA, 1005)
    assert read_by_chunks(b"q" * 999 + b"\r\n.\r\n", 0, []) == (b"q" * 999 + b"\r\n", 1004)


def test_unstuffing_removes_one_dot_at_each_line_start_only() -> None:
    assert unstuff(b"..a\r\n.b.\r\nc..\r\n...\r\n") == b".a\r\nb.\r\nc..\r\n..\r\n"
