"""The SMTP DATA phase as a decision over bytes: where the data ends, what it says, what refuses it.

RFC 5321 4.5.2: the data ends at the first ``CRLF . CRLF`` (the data's start counts as a line
start), and a line the client began with a dot carries one extra dot. The intake reads DATA in
large chunks rather than line by line (``appliance.inbound.smtp``), and ``DataStream`` takes those
chunks however the network cut them. Every step is a C-speed bytes operation (``find``,
``split``, ``replace``), so a megabyte costs about what copying it costs; the only Python loop
runs over a message already known to be refused.

Two refusals, RFC 5321 4.5.3.1.6 and 4.5.3.1.10, and whichever the stream reaches first wins:

- a line too long: 1000 octets of one line, the stuffing dot counted, without its CRLF. This is
  RFC 5321's 998 octets of text plus the one dot a client may add, plus one, as aiosmtpd took it;
- too much data: more stuffed octets than the size limit (RFC 1870 SIZE counts what is sent).

Only the first ``size_limit + 1`` octets are kept: enough to say which refusal came first, and a
bound on the memory one session holds whatever the client sends.
"""

from __future__ import annotations

__all__ = ["LINE_TOO_LONG", "TOO_MUCH_DATA", "DataRefusal", "DataStream", "unstuff"]

import msgspec

from appliance.mail import Unreadable

TERMINATOR = b"\r\n.\r\n"
CHUNK_END = b".\r\n"
"""What the reader reads up to: every terminator ends with it, so no read goes past the data."""
LONG_LINE = 1000
"""Octets of one line (without CRLF, with the stuffing dot) that make it too long."""


class DataRefusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why the data was refused while it was received: the SMTP reply and the audit's reason."""

    reply: str
    unreadable: Unreadable


LINE_TOO_LONG = DataRefusal(
    reply="500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    unreadable=Unreadable(reason="malformed_message",
                          detail="a line of the message is over 1000 octets (RFC 5321 4.5.3.1.6)"))
TOO_MUCH_DATA = DataRefusal(
    reply="552 5.3.4 Message too big for system",
    unreadable=Unreadable(reason="message_too_large",
                          detail="message data exceeds the SIZE limit (RFC 1870)"))


class DataStream:
    """The DATA of one transaction, fed chunk by chunk until ``ended``.

    ``size_limit`` of 0 means no limit (as aiosmtpd's ``data_size_limit``).
    """

    def __init__(self, size_limit: int) -> None:
        self.size_limit = size_limit
        self.ended = False
        self.size = 0
        """Stuffed octets of data so far, the terminator not counted (what SIZE limits)."""
        self._kept = bytearray()
        self._cap = size_limit + 1 if size_limit else 0
        self._tail = b"\r\n"  # the data starts at a line start: a first line "." ends it

    def feed(self, chunk: bytes) -> int:
        """Take the next octets of the stream; how many of them were DATA and its terminator.

        What follows the terminator is not consumed. A reader that stops at ``CHUNK_END`` never
        gives any: with it the answer is always ``len(chunk)``.
        """
        if self.ended:
            return 0
        start = self.size  # the stream offset of chunk[0]; the tail is what came just before it
        at = (self._tail + chunk[:4]).find(TERMINATOR)
        if at >= 0:
            terminator = start - len(self._tail) + at
        else:
            found = chunk.find(TERMINATOR)
            if found < 0:
                self._take(chunk)
                self._tail = (self._tail + chunk)[-4:]
                return len(chunk)
            terminator = start + found
        # The data ends with the terminator's CRLF (the last line's end); at -2, before any data,
        # that CRLF is the virtual line start and the data is empty.
        data_end = max(terminator + 2, 0)
        if data_end >= start:
            self._take(chunk[: data_end - start])
        else:  # the terminator began in an earlier chunk, after that CRLF
            self.size = data_end
            del self._kept[data_end:]
        self.ended = True
        return terminator + len(TERMINATOR) - start

    def _take(self, octets: bytes) -> None:
        self.size += len(octets)
        if not self._cap:
            self._kept += octets
        elif len(self._kept) < self._cap:
            self._kept += octets[: self._cap - len(self._kept)]

    @property
    def held(self) -> int:
        """Octets held in memory: at most ``size_limit + 1``, whatever the client sends."""
        return len(self._kept)

    def refusal(self) -> DataRefusal | None:
        """The refusal the data earned, once ``ended``; None when it is taken."""
        over = self.size_limit and self.size > self.size_limit
        long_line_at = _first_long_line(self._kept)
        if long_line_at is not None and (not over or long_line_at <= self.size_limit):
            return LINE_TOO_LONG
        return TOO_MUCH_DATA if over else None

    def message(self) -> bytes:
        """The message as the client meant it (dot-unstuffed, CRLF kept), once ended and taken."""
        return unstuff(bytes(self._kept))


def unstuff(stuffed: bytes) -> bytes:
    """Remove the transparency dot of each line that begins with one (RFC 5321 4.5.2)."""
    unstuffed = stuffed.replace(b"\r\n.", b"\r\n")
    # replace() never touches the first line: it has no CRLF before it.
    return unstuffed[1:] if unstuffed.startswith(b".") else unstuffed


def _first_long_line(kept: bytearray) -> int | None:
    """The offset of the 1001st octet of the first line too long, if one is known in ``kept``."""
    lines = kept.split(b"\r\n")
    # A known line: all of them but the last, which may be cut by the size cap; of that one only
    # its first 1000 octets with one more after them show it has no CRLF at 999.
    if max(map(len, lines[:-1]), default=0) < LONG_LINE and len(lines[-1]) <= LONG_LINE:
        return None
    start = 0
    last = len(lines) - 1
    for index, line in enumerate(lines):
        if len(line) >= LONG_LINE + (index == last):
            return start + LONG_LINE
        start += len(line) + 2
    return None  # pragma: no cover - the check above found one
