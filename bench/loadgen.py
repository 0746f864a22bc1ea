"""The SMTP load generator every benchmark here shares (``make bench``, ``make bench-peer``).

``sessions`` persistent SMTP sessions on 127.0.0.1, each sending one message
after another: MAIL, RCPT, DATA, one command per round trip (no PIPELINING,
which not every server offers), the message dot-stuffed once before the
run. A transaction's latency runs from MAIL FROM to the reply after the
final dot. A refused command (4xx/5xx) is counted by its code and followed by
RSET; a dropped connection is counted and the session reconnects. The run
stops after ``count`` messages or ``seconds``, whichever comes first;
``rate`` paces the starts (message n is not started before n / rate s).

As a module: ``await send(...)`` returns a ``Run``. As a program it prints
the ``Run`` as JSON, so a benchmark can drive it from its own process (its
CPU then is not the server's)::

    python bench/loadgen.py --port 2525 --sessions 16 --count 2000 --seconds 30 \\
        --mail-from s@bench.example --rcpt agent@example.test messages/*.eml
"""

from __future__ import annotations

__all__ = ["Run", "dot_stuffed", "percentile", "send"]

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def dot_stuffed(raw: bytes) -> bytes:
    """The DATA payload of ``raw``: CRLF line ends, leading dots doubled, the final ``.`` line."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@dataclass
class Run:
    """What one run measured."""

    sessions: int
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Refused commands by reply code (e.g. ``"550"``)."""
    errors: int = 0
    """Connections lost or timed out mid-transaction."""
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    """Seconds from MAIL FROM to the final 250, per accepted message, in completion order."""
    accepted_at: dict[int, float] = field(default_factory=dict)
    """Message number -> wall-clock time (``time.time()``) of its 250."""
    client_cpu: float = 0.0
    """CPU seconds this process spent (only meaningful when it runs alone, as a program)."""

    @property
    def rate(self) -> float:
        return self.accepted / self.wall if self.wall else 0.0

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        return {"sessions": self.sessions, "accepted": self.accepted, "refused": self.refused, "errors": self.errors,
                "wall": round(self.wall, 4), "rate": round(self.rate, 2),
                "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 3),
                "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 3),
                "client_cpu": round(self.client_cpu, 4)}


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Session:
    def __init__(self, host: str, port: int, helo: str, timeout: float) -> None:
        self.host, self.port, self.helo, self.timeout = host, port, helo, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def reply(self) -> str:
        assert self.reader is not None
        while True:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), self.timeout)
            if len(line) < 4 or line[3:4] != b"-":
                return line[:3].decode("ascii", "replace")

    async def command(self, line: bytes, expect: str = "2") -> None:
        assert self.writer is not None
        self.writer.write(line)
        code = await self.reply()
        if not code.startswith(expect):
            raise _Refused(code)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 16), self.timeout)
        if not (await self.reply()).startswith("2"):
            raise ConnectionError("greeting refused")
        await self.command(b"EHLO " + self.helo.encode() + b"\r\n")

    async def close(self) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 2)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            pass
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        self.reader = self.writer = None

    async def transaction(self, mail_from: bytes, rcpts: Sequence[bytes], data: bytes) -> None:
        assert self.writer is not None
        await self.command(b"MAIL FROM:<" + mail_from + b">\r\n")
        for rcpt in rcpts:
            await self.command(b"RCPT TO:<" + rcpt + b">\r\n")
        await self.command(b"DATA\r\n", expect="3")
        self.writer.write(data)
        await self.writer.drain()
        code = await self.reply()
        if not code.startswith("2"):
            raise _Refused(code)


async def send(port: int, messages: Sequence[bytes], *, sessions: int, count: int, seconds: float,
               mail_from: str | Callable[[int], str], rcpt: Sequence[str], rate: float | None = None,
               host: str = "127.0.0.1", helo: str = "loadgen.bench.example", reply_timeout: float = 60.0) -> Run:
    """Send ``count`` messages (``messages`` in turn, already dot-stuffed: see ``dot_stuffed``) over ``sessions``."""
    run = Run(sessions=sessions)
    refused: Counter[str] = Counter()
    rcpts = [r.encode() for r in rcpt]
    start = time.perf_counter()
    deadline = start + seconds
    next_n = 0

    def take() -> int | None:
        nonlocal next_n
        if next_n >= count or time.perf_counter() >= deadline:
            return None
        next_n += 1
        return next_n - 1

    async def worker() -> None:
        session = _Session(host, port, helo, reply_timeout)
        try:
            while (n := take()) is not None:
                if rate is not None and (wait := start + n / rate - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                sender = mail_from(n) if callable(mail_from) else mail_from
                try:
                    if session.writer is None:
                        await session.open()
                    t0 = time.perf_counter()
                    await session.transaction(sender.encode(), rcpts, messages[n % len(messages)])
                    run.latencies.append(time.perf_counter() - t0)
                    run.accepted_at[n] = time.time()
                    run.accepted += 1
                except _Refused as refusal:
                    refused[refusal.code] += 1
                    try:
                        await session.command(b"RSET\r\n")
                    except (_Refused, OSError, asyncio.IncompleteReadError, TimeoutError):
                        await session.close()
                except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError,
                        ConnectionError):
                    run.errors += 1
                    await session.close()
        finally:
            await session.close()

    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker() for _ in range(sessions)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    run.wall = time.perf_counter() - start
    run.refused = dict(refused)
    run.client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("messages", nargs="+", type=Path, help="message files, sent in turn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=None, help="messages/s to pace to (default: as fast as served)")
    parser.add_argument("--mail-from", required=True)
    parser.add_argument("--rcpt", action="append", required=True)
    parser.add_argument("--latencies", action="store_true", help="include every latency in the JSON")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    payloads = [dot_stuffed(p.read_bytes()) for p in args.messages]
    run = asyncio.run(send(args.port, payloads, sessions=args.sessions, count=args.count, seconds=args.seconds,
                           mail_from=args.mail_from, rcpt=args.rcpt, rate=args.rate, host=args.host))
    out: dict[str, object] = dict(run.summary())
    if args.latencies:
        out["latencies"] = asdict(run)["latencies"]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
