"""The webhook dispatcher: sends pending deliveries, records every attempt, retries, dead-letters.

One task per attempt, at most ``delivery.concurrency`` in flight per agent.
A delivery stays ``pending`` while its attempt is in flight, and its outcome
is committed in one transaction with the attempt row; so after a crash the
same delivery (same ``webhook-id``) is simply sent again (at least once).

Answers (Standard Webhooks): 2xx delivered; 410 disables the endpoint (until
``appliance deliveries enable``); 429, 502 and 504 slow the whole endpoint
down; ``Retry-After`` (seconds or HTTP-date) is honoured; anything else is
retried on the schedule (``appliance.delivery.schedule``), then dead.
"""

from __future__ import annotations

__all__ = ["SLOW_DOWN", "Dispatcher", "Verdict", "judge", "start_dispatcher"]

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import httpx

from appliance.audit import record_event
from appliance.config import AgentConfig, ApplianceConfig
from appliance.delivery.jobs import enqueue
from appliance.delivery.notify import Broadcast
from appliance.delivery.payload import DeliveryFailedData, EndpointDisabledData
from appliance.delivery.render import render_event
from appliance.delivery.schedule import RetrySchedule, parse_retry_after
from appliance.delivery.signing import load_secrets, webhook_headers
from appliance.delivery.tokens import TokenIssuer, load_token_key
from appliance.store.database import Database, utc
from appliance.store.deliveries import (
    Attempt,
    DueDelivery,
    any_pending,
    disable_endpoint,
    disabled_agents,
    due_deliveries,
    label_stream_only,
    next_attempt_after,
    record_attempt,
    record_delivered,
    settle_attempt,
)

log = logging.getLogger("appliance.delivery")

SLOW_DOWN = frozenset({429, 502, 504})
"""Answers that mean "too much": the endpoint's other deliveries wait too."""

USER_AGENT = "appliance-webhooks/0.1"
_ERROR_SNIPPET = 300
"""Bytes of a failed answer's body kept in ``last_error``."""
_DRAIN_LIMIT = 65536
"""Bytes of an answer read at most (the rest is not waited for)."""


@dataclass(frozen=True)
class Verdict:
    """What one attempt's answer means for its delivery."""

    kind: Literal["delivered", "retry", "dead", "disabled"]
    delay: float | None = None
    """Seconds until the next attempt (``retry``)."""
    pause: float | None = None
    """Seconds the endpoint's other deliveries wait too (slow down, ``Retry-After``)."""


def judge(status: int | None, retry_after: float | None, attempts: int, schedule: RetrySchedule) -> Verdict:
    """The verdict on an answer (``status`` None: no answer), after ``attempts`` attempts this round."""
    if status is not None and 200 <= status < 300:
        return Verdict("delivered")
    if status == 410:
        return Verdict("disabled")
    delay = schedule.next_delay(attempts, retry_after)
    if delay is None:
        return Verdict("dead")
    slow = status in SLOW_DOWN or retry_after is not None
    return Verdict("retry", delay=delay, pause=delay if slow else None)


@dataclass(frozen=True)
class _Result:
    status: int | None
    """The answer's status line, even when its body was then cut short (kept in the attempt row)."""
    retry_after: float | None
    latency_ms: float | None
    error: str | None
    complete: bool = False
    """The whole answer arrived (or as much of its body as is read): only then does ``status`` count."""

    @property
    def verdict_status(self) -> int | None:
        """The status the verdict is taken on: none for an answer cut short or timed out mid-body."""
        return self.status if self.complete else None


class Dispatcher:
    """Delivers the ``deliveries`` table to the agents' webhooks; wakes the event streams."""

    def __init__(self, db: Database, config: ApplianceConfig, *, tokens: TokenIssuer,
                 schedule: RetrySchedule | None = None, client: httpx.AsyncClient | None = None,
                 environ: Mapping[str, str] | None = None, idle_poll: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.tokens = tokens
        self.schedule = schedule or RetrySchedule()
        self.concurrency = config.delivery.concurrency
        self.timeout = config.delivery.timeout
        self.idle_poll = idle_poll
        self.endpoints_refresh = 1.0
        """Seconds between reads of the ``endpoints`` table (an ``enable`` by the CLI or API is seen this late)."""
        self.clock = clock
        self.changed = Broadcast()
        """Notified whenever deliveries may have been committed (event streams wait on it)."""
        self._environ = environ
        self._endpoints: dict[str, AgentConfig] = {
            a.address.lower(): a for a in config.agents if a.webhook_url}
        self._stream_only = [a.address.lower() for a in config.agents if not a.webhook_url]
        self._client = client
        self._own_client = client is None
        self._wakeup = asyncio.Event()
        self._inflight: dict[str, set[str]] = {a: set() for a in self._endpoints}
        """Deliveries claimed and not yet recorded, per agent (never claimed twice)."""
        self._sending: dict[str, int] = dict.fromkeys(self._endpoints, 0)
        """Requests on the wire per agent (bounded by ``concurrency``)."""
        self._disabled: set[str] = set()
        self._disabled_read = float("-inf")
        self._paused: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._streams_closed = False

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                             headers={"user-agent": USER_AGENT})
        self._runner = asyncio.create_task(self._run(), name="delivery-dispatcher")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let attempts in flight finish for ``grace`` seconds, then cancel them.

        A cancelled attempt leaves its delivery ``pending``: it is sent again at the next start.
        """
        self._stopping = True
        self.close_streams()
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
        if self._own_client and self._client is not None:
            await self._client.aclose()

    @property
    def streams_closed(self) -> bool:
        """True once the appliance is shutting down: event streams end so the server can stop."""
        return self._streams_closed

    def close_streams(self) -> None:
        """End every event stream (clients reconnect with ``Last-Event-ID``); call it when shutdown begins.

        Safe from any thread.
        """
        self._streams_closed = True
        self._in_loop(self.changed.notify)

    def wake(self) -> None:
        """New deliveries are committed: look now (safe from any thread)."""
        self._in_loop(self._wake_now)

    def refresh_endpoints(self) -> None:
        """An endpoint was enabled: read the ``endpoints`` table again now, and look."""
        self._disabled_read = float("-inf")
        self.wake()

    def _in_loop(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback()
        else:
            loop.call_soon_threadsafe(callback)

    def _wake_now(self) -> None:
        self._wakeup.set()
        self.changed.notify()

    @property
    def in_flight(self) -> int:
        return sum(len(ids) for ids in self._inflight.values())

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                wait = await self._dispatch_due()
            except Exception:  # the database or a bug: keep the loop alive, look again soon
                log.exception("delivery dispatcher: could not look for due deliveries")
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(wait, 0.0))

    async def _dispatch_due(self) -> float:
        """Start the attempts that are due; return seconds until something else may be due."""
        now = self.clock()
        if self._stream_only:
            await self._label_stream_only()
        self._backoff = {k: v for k, v in self._backoff.items() if v > now}
        self._paused = {k: v for k, v in self._paused.items() if v > now}
        if time.monotonic() - self._disabled_read > self.endpoints_refresh:
            self._disabled = await self.db.read(disabled_agents)
            self._disabled_read = time.monotonic()
        enabled = [a for a in self._endpoints if a not in self._disabled]
        free = {a: self.concurrency - self._sending[a] for a in enabled if a not in self._paused}
        ready = [a for a, n in free.items() if n > 0]
        if ready:
            skip = [d for ids in self._inflight.values() for d in ids] + list(self._backoff)
            jobs = await self.db.read(lambda con: due_deliveries(
                con, now=now, agents=ready, skip=skip, per_agent=self.concurrency))
            for job in jobs:
                if free[job.agent] <= 0:
                    continue
                free[job.agent] -= 1
                self._inflight[job.agent].add(job.delivery_id)
                task = asyncio.create_task(self._attempt(job), name=f"delivery-{job.delivery_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        wakes = [*self._paused.values(), *self._backoff.values()]
        if enabled:
            next_due = await self.db.read(lambda con: next_attempt_after(con, agents=enabled, now=now))
            if next_due is not None:
                wakes.append(next_due)
        wait = min([self.idle_poll, *(w - now for w in wakes)])
        if self._disabled:  # notice an endpoint enabled behind our back (CLI, another API worker) soon
            wait = min(wait, self.endpoints_refresh)
        return wait

    async def _label_stream_only(self) -> None:
        """Jobs of agents without a webhook are read on the event stream only: say so (``stream``)."""
        agents = self._stream_only
        if await self.db.read(lambda con: any_pending(con, agents)):
            await self.db.write(lambda con: label_stream_only(con, agents))

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt(self, job: DueDelivery) -> None:
        try:
            result = await self._send(job)
            await self._record(job, result)
        except asyncio.CancelledError:
            raise
        except Exception:  # recording failed: the delivery stays pending; do not hammer it
            log.exception("delivery %s: attempt could not be recorded", job.delivery_id)
            self._backoff[job.delivery_id] = self.clock() + 30.0
        finally:
            self._inflight[job.agent].discard(job.delivery_id)
            self._wakeup.set()

    async def _send(self, job: DueDelivery) -> _Result:
        endpoint = self._endpoints[job.agent]
        assert endpoint.webhook_url is not None and self._client is not None
        now = self.clock()
        try:
            keys = load_secrets(endpoint.webhook_secret_env, self._environ)
        except ValueError as exc:
            return _Result(status=None, retry_after=None, latency_ms=None, error=str(exc), complete=True)
        body = render_event(job.event_type, job.created_at, job.payload, self.tokens, now)
        headers = {**webhook_headers(keys, job.delivery_id, int(now), body), "content-type": "application/json"}
        started = time.perf_counter()
        status: int | None = None
        retry_after: float | None = None
        error: str | None = None
        complete = False
        self._sending[job.agent] += 1
        try:
            # One deadline for the whole attempt (connect, send, answer, body): httpx's timeout bounds each
            # read, so a receiver dripping a byte a second would otherwise hold the slot for ever.
            async with asyncio.timeout(self.timeout), self._client.stream(
                    "POST", endpoint.webhook_url, content=body, headers=headers, timeout=self.timeout) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
                head = await _drain(response)
                complete = True
                if not 200 <= status < 300:
                    error = f"HTTP {status}: {_snippet(head)}".rstrip(": ")
        except (TimeoutError, httpx.TimeoutException):
            error = f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            self._sending[job.agent] -= 1
            self._wakeup.set()  # a slot is free: the next delivery need not wait for this one's record
        if not complete and status is not None:  # the answer was cut short: not an answer (never "delivered")
            error = f"HTTP {status} answer cut short ({error})"
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return _Result(status=status, retry_after=retry_after if complete else None, latency_ms=latency_ms,
                       error=error, complete=complete)

    async def _record(self, job: DueDelivery, result: _Result) -> None:
        now = self.clock()
        verdict = judge(result.verdict_status, result.retry_after, job.attempts - job.round_start + 1, self.schedule)
        url = self._endpoints[job.agent].webhook_url or ""
        if verdict.pause is not None:
            self._paused[job.agent] = max(self._paused.get(job.agent, 0.0), now + verdict.pause)
        if verdict.kind == "disabled":
            self._disabled.add(job.agent)
        if verdict.kind == "retry":
            log.info("delivery %s to %s: attempt %d failed (%s); next in %.1f s", job.delivery_id, job.agent,
                     job.attempts + 1, result.error, verdict.delay or 0.0)
        elif verdict.kind != "delivered":
            log.warning("delivery %s to %s: %s after attempt %d (%s)", job.delivery_id, job.agent, verdict.kind,
                        job.attempts + 1, result.error)
        if verdict.kind == "delivered":  # the common case: batched with its neighbours
            await self.db.write_batch(lambda batch: record_delivered(batch, _attempt_row(job, result, now)))
        else:
            await self.db.write(lambda con: _commit_attempt(con, job, result, verdict, now, url))
        if verdict.kind in ("dead", "disabled"):
            self.changed.notify()


async def _drain(response: httpx.Response) -> bytes:
    """The start of the answer's body; a short body is read to its end so the connection is reused."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > _DRAIN_LIMIT:  # a big answer nobody reads: drop the connection instead
            break
    return data[:_ERROR_SNIPPET]


def _snippet(data: bytes) -> str:
    return " ".join(data.decode("utf-8", "replace").split())


def _attempt_row(job: DueDelivery, result: _Result, now: float) -> Attempt:
    return Attempt(delivery_id=job.delivery_id, attempt=job.attempts + 1, ts=utc(now), status=result.status,
                   latency_ms=result.latency_ms, error=result.error)


def _commit_attempt(con: duckdb.DuckDBPyConnection, job: DueDelivery, result: _Result, verdict: Verdict, now: float,
                    url: str) -> None:
    """One transaction: the attempt row, the delivery's new state, and what a dead or 410 implies."""
    attempt = job.attempts + 1
    record_attempt(con, _attempt_row(job, result, now))
    status = {"delivered": "delivered", "retry": "pending", "dead": "dead", "disabled": "failed"}[verdict.kind]
    next_at = now + verdict.delay if verdict.kind == "retry" and verdict.delay is not None else None
    changed = settle_attempt(con, job.delivery_id, status=status, last_status=result.status,
                             last_error=result.error, next_attempt_at=next_at)
    if not changed:  # replayed or discarded meanwhile: the attempt is history, the state is someone else's
        return
    if verdict.kind == "dead":
        record_event(con, "delivery.dead", job.agent,
                     f"{job.delivery_id} ({job.event_type}) dead after {attempt} attempt(s): {result.error}")
        enqueue(con, agent=job.agent, event_type="delivery.failed", status="stream", email_id=job.email_id,
                decision_id=None, now=now,
                data=DeliveryFailedData(agent=job.agent, delivery_id=job.delivery_id, event_type=job.event_type,
                                        email_id=job.email_id, attempts=attempt, last_status=result.status,
                                        last_error=result.error))
    elif verdict.kind == "disabled":
        reason = f"{url} answered 410 Gone to {job.delivery_id}"
        disable_endpoint(con, job.agent, at=utc(now), reason=reason)
        record_event(con, "endpoint.disabled", job.agent, reason)
        enqueue(con, agent=job.agent, event_type="endpoint.disabled", status="stream", email_id=None,
                decision_id=None, now=now,
                data=EndpointDisabledData(agent=job.agent, url=url, delivery_id=job.delivery_id, reason=reason))


async def start_dispatcher(db: Database, config: ApplianceConfig, **options: Any) -> Dispatcher:
    """A started dispatcher for ``config``, its capability-token key loaded (or created) in data_dir."""
    tokens = TokenIssuer(load_token_key(config.data_path), issuer=config.hostname, ttl=config.delivery.token_ttl)
    dispatcher = Dispatcher(db, config, tokens=tokens, **options)
    await dispatcher.start()
    return dispatcher
