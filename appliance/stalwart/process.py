"""Stalwart as a local process (``supervise = "binary"``): ``[stalwart] command`` run as our child.

Its stdout and stderr are read line by line into our log (``backend.forward_line``). Stopping is
SIGTERM, then SIGKILL after the grace period.

A process cannot be adopted: a child left behind by an appliance that died (``kill -9``) is not ours
to find, and the new one started in its place finds the ports taken and exits, which the supervisor
sees and retries with backoff until the old one is gone. (The Docker backend adopts by container
name instead.) The child runs in its own session, so a Ctrl-C meant for the appliance does not reach
it before the appliance has stopped it gracefully.
"""

from __future__ import annotations

__all__ = ["ProcessBackend"]

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from typing import Literal

from appliance.stalwart.backend import BackendError, RunStatus, forward_line


class ProcessBackend:
    """Runs ``command`` with ``environment`` added to ``base_environ`` (ours when None)."""

    name: Literal["binary"] = "binary"
    container_id: str | None = None

    def __init__(self, command: Sequence[str], environment: Mapping[str, str],
                 base_environ: Mapping[str, str] | None = None) -> None:
        if not command:
            raise BackendError('stalwart.command: supervise = "binary" needs the program and its arguments, '
                               'e.g. ["/usr/local/bin/stalwart", "--config", "/etc/stalwart/config.json"]')
        self.command = list(command)
        self.env = {**(os.environ if base_environ is None else base_environ), **environment}
        self.proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def ensure_running(self) -> str:
        if self.proc is not None and self.proc.returncode is None:
            return "running"
        await self._drain_readers()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise BackendError(f"stalwart.command: could not run {self.command[0]!r}: {exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [asyncio.create_task(_forward(self.proc.stdout, "stdout"), name="stalwart-stdout"),
                         asyncio.create_task(_forward(self.proc.stderr, "stderr"), name="stalwart-stderr")]
        return f"started (pid {self.proc.pid})"

    async def status(self) -> RunStatus:
        if self.proc is None:
            return RunStatus(running=False, detail="not started")
        code = self.proc.returncode
        return RunStatus(running=code is None, exit_code=code)

    async def stop(self, grace: float) -> RunStatus:
        proc = self.proc
        if proc is None:
            return RunStatus(running=False, detail="not started")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                await self._drain_readers()
                return RunStatus(running=False, exit_code=proc.returncode,
                                 detail=f"killed: still running {grace:g} s after SIGTERM")
        await self._drain_readers()
        return RunStatus(running=False, exit_code=proc.returncode)

    async def close(self) -> None:
        """Stops reading its output. The process keeps running, but its pipes are no longer read: a
        child whose output nobody reads blocks once the pipe is full, so ``detach`` is for an appliance
        about to exit (the child then gets EOF/SIGPIPE on its output)."""
        for task in self._readers:
            task.cancel()
        await self._drain_readers()

    async def _drain_readers(self) -> None:
        """Lets the readers log what is left (EOF follows the exit), but not for long: a grandchild
        holding the pipes open would keep them reading."""
        readers, self._readers = self._readers, []
        if readers:
            _, pending = await asyncio.wait(readers, timeout=2.0)
            for task in pending:
                task.cancel()
            for task in readers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _forward(stream: asyncio.StreamReader, name: str) -> None:
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the reader's limit (64 KiB): take what is there
            line = await stream.read(65536)
        if not line:
            return
        forward_line(line.decode("utf-8", "replace"), name)
