"""Where ``inspect_message`` runs: in reader processes with a deadline, or in this process.

The email package's parser is pure Python and, on hostile shapes (a long
folded Subject, deep nesting), super-linear; running it on the event loop let
one unauthenticated message stall SMTP, HTTP and signal handling for minutes.
A ``ReaderPool`` runs each reading in one of a few worker processes (which
also puts the parse on the machine's other cores); a reading that outlives
its deadline, or needs more memory than a worker may have, costs that worker
its life, and the message is refused as ``message_too_complex``. The event
loop only waits.

``InlineReader`` runs the same function in a thread of this process: for
``policy explain`` and tests, where no deadline is needed. The content guards
travel with the message (``GuardSpec``), so their scan runs in the reader too.
"""

from __future__ import annotations

__all__ = ["InlineReader", "MessageReader", "ReaderPool"]

import asyncio
import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Protocol

import msgspec

from appliance.gate.inspection import Inspection, InspectionRequest, guard_specs, inspect_message, inspect_request
from appliance.mail import MessageBytes, ReadingLimits, Unreadable
from appliance.policy import ContentGuard

log = logging.getLogger("appliance.mail.readers")

_PR_SET_PDEATHSIG = 1
_FRAME = struct.Struct(">Q")
_SERVING, _EXITING = b"\x00", b"\x01"
_READY = b"ready"
"""A fresh reader's first frame: its imports are done, so a deadline from now on measures reading only."""
_START_TIMEOUT = 120.0
"""Seconds a reader may take to start (import) on a loaded machine before the appliance gives up on it."""
"""First byte of a reader's answer: whether it goes on serving after this one."""
_ENCODER = msgspec.msgpack.Encoder()
_REQUEST_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Inspection)
_REQUESTS = msgspec.msgpack.Decoder(InspectionRequest)


class MessageReader(Protocol):
    """Runs ``inspect_message`` somewhere and answers with its Inspection."""

    async def read(self, message: MessageBytes, guards: Sequence[ContentGuard] = ()) -> Inspection: ...


class InlineReader:
    """``inspect_message`` in a worker thread of this process, without a deadline."""

    def __init__(self, limits: ReadingLimits | None = None) -> None:
        self.limits = limits or ReadingLimits()

    async def read(self, message: MessageBytes, guards: Sequence[ContentGuard] = ()) -> Inspection:
        return await asyncio.to_thread(inspect_message, message, self.limits, guards)


def _too_complex(detail: str) -> Inspection:
    return Inspection(unreadable=Unreadable(reason="message_too_complex", detail=detail))


class _Worker:
    """One reader process (``python -m appliance.inbound.readers``) and our ends of its pipes.

    A plain subprocess rather than ``multiprocessing``: nothing of the parent (its
    ``__main__``, its DuckDB threads) is imported or forked into the reader.
    Frames on both pipes are an 8-byte big-endian length, then the bytes.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def ask(self, data: bytes) -> bytes:
        """Send one message, wait for its Inspection (blocking: runs in a thread)."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(_FRAME.pack(len(data)))
        stdin.write(data)
        stdin.flush()
        return _read_frame(stdout)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(Exception):
                if pipe is not None:
                    pipe.close()


def _read_frame(pipe: IO[bytes]) -> bytes:
    head = pipe.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError("reader closed its pipe")
    (length,) = _FRAME.unpack(head)
    data = pipe.read(length)
    if len(data) < length:
        raise EOFError("reader closed its pipe mid-answer")
    return data


class ReaderPool:
    """``processes`` reader processes; each reads one message at a time within ``deadline`` seconds."""

    def __init__(self, *, processes: int, deadline: float, memory_mb: int | None,
                 limits: ReadingLimits | None = None) -> None:
        self.size = processes if processes > 0 else (os.cpu_count() or 1)
        self.deadline = deadline
        self.memory_mb = memory_mb
        self.limits = limits or ReadingLimits()
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._threads = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="reader")
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.killed = 0
        """Readers killed for overrunning their deadline or dying (a metric)."""

    async def start(self) -> None:
        """Start every reader process."""
        workers = await asyncio.gather(*(asyncio.to_thread(self._spawn) for _ in range(self.size)))
        for worker in workers:
            self._all.add(worker)
            self._idle.put_nowait(worker)
        log.info("%d reader processes started (deadline %.1f s)", self.size, self.deadline)

    def _spawn(self) -> _Worker:
        limits = msgspec.json.encode(self.limits).decode()
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.inbound.readers", limits, str(self.memory_mb or 0), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        worker = _Worker(process)
        # Wait for it to be ready: a reader still importing must not spend a message's deadline on its imports
        # (under load that refused ordinary mail as too complex right after start or a replacement).
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], _START_TIMEOUT)
        try:
            if not ready or _read_frame(process.stdout) != _READY:
                raise EOFError("no ready frame")
        except (EOFError, OSError):
            worker.kill()
            raise RuntimeError(f"a reader process ({sys.executable} -m appliance.inbound.readers) did not start "
                               f"within {_START_TIMEOUT:g} s; exit status {process.returncode}") from None
        return worker

    async def read(self, message: MessageBytes, guards: Sequence[ContentGuard] = ()) -> Inspection:
        """The Inspection of ``message``; ``message_too_complex`` when its reader overran or died."""
        if self._closed:
            raise RuntimeError("the reader pool is closed")
        worker = await self._idle.get()
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        request = _REQUEST_ENCODER.encode(InspectionRequest(data=message.data, guards=guard_specs(guards)))
        asked = loop.run_in_executor(self._threads, worker.ask, request)
        asked.add_done_callback(_retrieve)
        try:
            answer = await asyncio.wait_for(asyncio.shield(asked), self.deadline)
        except TimeoutError:
            log.warning("reading a %d-byte message took over %.1f s: reader killed, message refused",
                        len(message.data), self.deadline)
            await self._replace(worker)
            return _too_complex(f"reading the message took over {self.deadline:g} s")
        except (EOFError, OSError) as exc:
            log.warning("a reader process died reading a %d-byte message (%s): replaced",
                        len(message.data), type(exc).__name__)
            await self._replace(worker)
            return _too_complex("reading the message exhausted its reader "
                                f"(over {self.memory_mb} MiB, or it crashed)")
        except asyncio.CancelledError:
            # The caller left (its client hung up); the reader finishes, then serves others.
            asked.add_done_callback(lambda done: self._release(
                worker, exiting=done.cancelled() or done.exception() is not None or done.result()[:1] == _EXITING))
            raise
        exiting = answer[:1] == _EXITING
        self._release(worker, exiting=exiting)
        log.debug("read %d bytes in %.1f ms", len(message.data), (time.monotonic() - started) * 1000)
        return _DECODER.decode(memoryview(answer)[1:])

    def _release(self, worker: _Worker, *, exiting: bool = False) -> None:
        if exiting and not self._closed:  # it answered, then exits (out of memory): start another
            task = asyncio.get_running_loop().create_task(self._replace(worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._idle.put_nowait(worker)

    async def _replace(self, worker: _Worker) -> None:
        self.killed += 1
        self._all.discard(worker)
        await asyncio.to_thread(worker.kill)
        if self._closed:
            return
        fresh = await asyncio.to_thread(self._spawn)
        self._all.add(fresh)
        self._idle.put_nowait(fresh)

    async def close(self) -> None:
        """Stop every reader (a reading in flight is cut short; its caller gets message_too_complex)."""
        self._closed = True
        workers = list(self._all)
        self._all.clear()
        await asyncio.gather(*(asyncio.to_thread(w.kill) for w in workers))
        self._threads.shutdown(wait=False, cancel_futures=True)


def _retrieve(future: asyncio.Future[bytes]) -> None:
    """Consume a reading's outcome nobody awaits any more (killed or abandoned readers)."""
    if not future.cancelled():
        future.exception()


def _serve(limits: ReadingLimits, memory_mb: int, parent: int) -> None:
    """A reader process's life: read messages from stdin, answer on stdout, until stdin closes."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the parent decides
    if memory_mb:
        import resource

        cap = memory_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(_FRAME.pack(len(_READY)) + _READY)
    stdout.flush()
    while True:
        try:
            data = _read_frame(stdin)
        except (EOFError, OSError):
            return
        exit_after = False
        try:
            reading = inspect_request(_REQUESTS.decode(data), limits)
        except MemoryError:
            reading, exit_after = _too_complex(f"reading the message needed over {memory_mb} MiB"), True
        except Exception as exc:  # a parser bug on hostile input: refuse the message, keep serving
            reading = Inspection(unreadable=Unreadable(
                reason="malformed_message", detail=f"message could not be read: {type(exc).__name__}"))
        try:
            answer = _ENCODER.encode(reading)
        except MemoryError:
            answer, exit_after = _ENCODER.encode(_too_complex("the reading of the message is too large")), True
        try:
            answer = (_EXITING if exit_after else _SERVING) + answer
            stdout.write(_FRAME.pack(len(answer)))
            stdout.write(answer)
            stdout.flush()
        except (EOFError, OSError):
            return
        if exit_after:
            return  # a process that ran out of memory may be in a bad state: the parent starts another


def _die_with(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no reader outlives the appliance."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


if __name__ == "__main__":  # a reader process: python -m appliance.inbound.readers LIMITS MEMORY_MB PARENT_PID
    _serve(msgspec.json.decode(sys.argv[1], type=ReadingLimits), int(sys.argv[2]), int(sys.argv[3]))
