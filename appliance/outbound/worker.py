"""The send loop: claims due jobs, hands each to the transport, commits what happened.

At most ``concurrency`` attempts in flight. A job stays ``queued`` in the
database while its attempt runs; its outcome is committed in one transaction
with its attempt row, its events and its audit row. So:

- a 250 is recorded before anything else happens (the transport returns the
  moment it hears it, QUIT goes on in the background; the commit is shielded
  from cancellation and retried if the database hiccups), and a job recorded
  ``sent`` is never claimed again, ``kill -9`` or not;
- a job in flight when the process dies was not recorded, and is tried again
  after the restart. That sends it twice only if the crash fell between the
  peer's 250 and our commit: SMTP cannot close that window (RFC 1047; RFC 5321
  6.1 makes the 250 the hand-over of responsibility, heard only by us), so it
  is kept to one commit;
- ``attempt_timeout`` bounds one whole attempt (every host, every command),
  past which it counts as a temporary failure.
"""

from __future__ import annotations

__all__ = ["OutboundWorker", "start_outbound"]

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from appliance.config import ApplianceConfig
from appliance.mailauth.dns import Resolver
from appliance.outbound.model import DeliveryOutcome
from appliance.outbound.queue import QueuedJob, claim_due, next_due, record_attempt, release_bytes
from appliance.outbound.retry import Backoff, Plan, plan_after
from appliance.outbound.transports import Transport, make_transport
from appliance.store.database import Batch, Database, DatabaseClosed

if TYPE_CHECKING:
    from appliance.inbound.reception import Reception

log = logging.getLogger("appliance.outbound")

TIDY_EVERY = 60.0
"""Seconds between two passes that drop the bytes of messages whose every job ended (``tidy``)."""
RECORD_TRIES = 6
"""Times an outcome's commit is tried before the job is left to be attempted again (a 250 we failed to record)."""


class OutboundWorker:
    """Delivers the ``outbound_jobs`` table through one transport."""

    def __init__(self, db: Database, transport: Transport, *, retry_for: float, backoff: Backoff | None = None,
                 concurrency: int = 8, attempt_timeout: float = 900.0, idle_poll: float = 5.0,
                 clock: Callable[[], float] = time.time, on_committed: Callable[[], None] | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency {concurrency} must be at least 1")
        self.db = db
        self.transport = transport
        self.retry_for = retry_for
        self.backoff = backoff or Backoff()
        self.concurrency = concurrency
        self.attempt_timeout = attempt_timeout
        self.idle_poll = idle_poll
        self.clock = clock
        self.on_committed = on_committed
        """Called after each committed outcome (the runtime wakes the webhook dispatcher with it)."""
        self._inflight: set[str] = set()
        self._held: dict[str, float] = {}
        """Jobs whose outcome could not be committed: not claimed again before this (monotonic) time."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._tidied = float("-inf")

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.create_task(self._run(), name="outbound-worker")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let attempts in flight finish for ``grace`` seconds, then cancel them.

        A cancelled attempt leaves its job ``queued``: it is tried again at the next start.
        """
        self._stopping = True
        self._wakeup.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await self.transport.aclose()

    def wake(self) -> None:
        """New jobs are committed: look now (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def run_due(self) -> int:
        """Attempt every job due now (up to ``concurrency``) and wait for their outcomes; return how many.

        The loop does the same without waiting; tests and one-shot tools call this directly.
        """
        tasks = await self._start_due()
        if tasks:
            await asyncio.gather(*tasks)
        return len(tasks)

    async def tidy(self) -> int:
        """Drop the queue's copy of messages whose every job ended (the loop does it when idle); return how many."""
        self._tidied = time.monotonic()
        return await self.db.write(release_bytes)

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                started = await self._start_due()
                if not started and not self._inflight and time.monotonic() - self._tidied > TIDY_EVERY:
                    await self.tidy()
                wait = await self._next_wait()
            except DatabaseClosed:
                return
            except Exception:  # the database or a bug: keep the loop alive, look again soon
                log.exception("outbound worker: could not look for due jobs")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(wait, 0.0))

    async def _start_due(self) -> list[asyncio.Task[None]]:
        free = self.concurrency - len(self._inflight)
        if free <= 0 or self._stopping:
            return []
        now = self.clock()
        held_now = time.monotonic()
        self._held = {k: v for k, v in self._held.items() if v > held_now}
        exclude = [*self._inflight, *self._held]
        due = await self.db.read(lambda con: claim_due(con, now=now, exclude=exclude, limit=free))
        started = []
        for job in due:
            if job.job_id in self._inflight:
                continue
            self._inflight.add(job.job_id)
            task = asyncio.create_task(self._attempt(job), name=f"outbound-{job.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def _next_wait(self) -> float:
        if len(self._inflight) >= self.concurrency:
            return self.idle_poll  # a finishing attempt wakes the loop
        now = self.clock()
        due = await self.db.read(lambda con: next_due(con, after=now))
        waits = [self.idle_poll, *(v - time.monotonic() for v in self._held.values())]
        if due is not None:
            waits.append(due - now)
        return min(waits)

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt(self, job: QueuedJob) -> None:
        try:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    outcome = await self.transport.deliver(job.delivery())
            except TimeoutError:
                outcome = DeliveryOutcome(status="retry", code=None,
                                          detail=f"attempt timed out after {self.attempt_timeout:g} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transport bug must not lose the job: it is tried again later
                log.exception("outbound job %s: transport %s failed", job.job_id, self.transport.name)
                outcome = DeliveryOutcome(status="retry", code=None,
                                          detail=f"transport error: {type(exc).__name__}: {exc}")
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            # Shielded: once the peer said 250, stopping must not lose the record of it.
            await asyncio.shield(self._record(job, outcome, latency_ms))
        finally:
            self._inflight.discard(job.job_id)
            self._wakeup.set()

    async def _record(self, job: QueuedJob, outcome: DeliveryOutcome, latency_ms: float) -> None:
        now = self.clock()
        plan = plan_after(outcome, recipients=job.recipients, attempts=job.attempts + 1, queued_at=job.queued_at,
                          now=now, retry_for=self.retry_for, backoff=self.backoff)

        def commit(batch: Batch) -> None:
            record_attempt(batch, job, outcome, plan, now=now, latency_ms=latency_ms)

        delay = 0.05
        for attempt in range(RECORD_TRIES):
            try:
                await self.db.write_batch(commit)
                break
            except DatabaseClosed:
                log.error("outbound job %s: database closed before its outcome (%s) was recorded; it will be "
                          "attempted again at the next start", job.job_id, outcome.status)
                return
            except Exception:
                if attempt == RECORD_TRIES - 1:
                    log.exception("outbound job %s: outcome %s could not be recorded; attempted again in 60 s",
                                  job.job_id, outcome.status)
                    self._held[job.job_id] = time.monotonic() + 60.0
                    return
                await asyncio.sleep(delay)
                delay *= 2
        _log(job, outcome, plan)  # after the commit: nothing comes between a 250 and its record
        if self.on_committed is not None:
            try:
                self.on_committed()
            except Exception:  # the outcome is committed: a failed notification changes nothing
                log.exception("outbound worker: on_committed callback failed")


def _log(job: QueuedJob, outcome: DeliveryOutcome, plan: Plan) -> None:
    attempt = job.attempts + 1
    if plan.status == "queued":
        log.info("outbound %s (%s, %s): attempt %d: %s; next at %.0f", job.job_id, job.email_id, job.domain,
                 attempt, outcome.detail, plan.next_attempt_at or 0.0)
    elif plan.status == "sent" and not (plan.rejected or plan.expired or plan.requeue):
        log.info("outbound %s (%s, %s): sent via %s: %s", job.job_id, job.email_id, job.domain, outcome.peer,
                 outcome.detail)
    else:
        log.warning("outbound %s (%s, %s): %s after attempt %d: %s", job.job_id, job.email_id, job.domain,
                    plan.status, attempt, outcome.detail)


async def start_outbound(db: Database, config: ApplianceConfig, *, reception: Reception | None,
                         resolver: Resolver,
                         environ: Mapping[str, str] | None = None, **options: Any) -> OutboundWorker:
    """A started worker for ``config``'s transport; ``options`` go to ``OutboundWorker`` (``on_committed``...)."""
    transport = make_transport(config, reception=reception, resolver=resolver, environ=environ, db=db)
    worker = OutboundWorker(db, transport, retry_for=config.outbound.retry_for, **options)
    await worker.start()
    return worker
