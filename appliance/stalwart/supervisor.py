"""The Stalwart supervisor: brings Stalwart up, watches its health, restarts it with backoff.

Lifecycle: ``start`` makes it run (the backend adopts, starts or creates it) and waits for
``/healthz/live``: a Stalwart without ``config.json`` is in bootstrap mode, live but not ready,
until provisioning configures it and asks for ``restart``; ``wait_ready`` waits for
``/healthz/ready``. Then the health loop probes every ``health_interval``: ready is ``ready`` (the
``on_ready`` callbacks run on each transition into it); up but not ready is ``starting`` within
``ready_timeout`` of the (re)start and a failure after; no answer within the probe timeout, an
error status or an exit is a failure. ``restarts.judge`` decides when failures call for a restart
and how long to wait first (exponential backoff); an exit restarts at once (after the backoff).

The backend (``engine.DockerBackend``, ``process.ProcessBackend``) carries out; nothing here is
Docker's or a process's.
"""

from __future__ import annotations

__all__ = ["StalwartNotReady", "Supervisor", "SupervisorState", "metrics_lines"]

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Literal, get_args

import httpx
import msgspec

from appliance.config import ApplianceConfig
from appliance.errors import ApplianceError, ConfigError, Problem
from appliance.stalwart.backend import Backend, BackendError, stalwart_environment
from appliance.stalwart.restarts import Health, Keep, Probe, RestartPolicy, Verdict, judge, restarted

log = logging.getLogger("appliance.stalwart")

Status = Literal["stopped", "starting", "ready", "unhealthy", "restarting", "failed"]
ReadyCallback = Callable[[], Awaitable[None]]


class StalwartNotReady(ApplianceError):
    """Stalwart did not come up (live, or ready) in time, or could not be started; the message says
    where it was looked for, for how long, and what was seen."""


class SupervisorState(msgspec.Struct, frozen=True):
    """What ``/healthz`` and ``/metrics`` show of the supervised Stalwart."""

    backend: str
    """``docker`` or ``binary``."""
    status: Status
    restarts: int
    """Restarts since the appliance started (after failures and requested ones alike)."""
    since: datetime
    """When ``status`` last changed (UTC)."""
    last_problem: str | None
    """The last thing found wrong (kept after it is resolved), None when nothing was."""
    container_id: str | None
    """The Docker container's id; None for a process."""


class Supervisor:
    """Runs one Stalwart through ``backend`` and keeps it healthy."""

    def __init__(self, backend: Backend, base_url: str, policy: RestartPolicy, *, health_interval: float,
                 probe_timeout: float, stop_grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.health_interval = health_interval
        self.probe_timeout = probe_timeout
        self.stop_grace = stop_grace
        self.clock = clock
        self._status: Status = "stopped"
        self._since = datetime.now(UTC)
        self._restarts = 0
        self._problem: str | None = None
        self._health = Health(started_at=clock())
        self._callbacks: list[ReadyCallback] = []
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one restart at a time: the health loop's or a requested one
        self._http: httpx.AsyncClient | None = None
        self._stopping = False  # stop() called: a restart in progress gives up instead of starting it again

    @classmethod
    def from_config(cls, config: ApplianceConfig, environ: Mapping[str, str] | None = None) -> Supervisor | None:
        """The supervisor ``[stalwart] supervise`` asks for; None for ``"none"``.

        ``ConfigError`` when the configuration (or the environment) lacks what it needs.
        """
        s = config.stalwart
        if s.supervise == "none":
            return None
        source = "[stalwart]"
        if not s.jmap_url:
            raise ConfigError([Problem(source=source, path="stalwart.jmap_url",
                                       reason="the supervisor probes Stalwart's health there; expected "
                                              "its HTTP base URL, e.g. http://127.0.0.1:8080")])
        try:
            env = stalwart_environment(config, os.environ if environ is None else environ)
            backend: Backend
            if s.supervise == "docker":
                from appliance.stalwart.engine import DockerBackend  # the docker package only when used

                backend = DockerBackend(s, env)
            else:
                from appliance.stalwart.process import ProcessBackend

                backend = ProcessBackend(s.command, env, environ)
        except BackendError as exc:
            raise ConfigError([Problem(source=source, path=str(exc).split(":", 1)[0],
                                       reason=str(exc).split(":", 1)[-1].strip())]) from exc
        policy = RestartPolicy(health_failures=s.health_failures, ready_timeout=s.ready_timeout,
                               backoff=s.restart_backoff, backoff_max=s.restart_backoff_max,
                               # up as long as the longest wait: whatever made it fail has had its chance
                               stable_after=max(s.restart_backoff_max, s.health_interval * s.health_failures))
        return cls(backend, s.jmap_url, policy, health_interval=s.health_interval,
                   probe_timeout=min(s.timeout, max(2.0, s.health_interval)), stop_grace=s.timeout)

    # -- the public face ----------------------------------------------------------------------------

    def state(self) -> SupervisorState:
        """The status now, for ``/healthz`` and ``/metrics``."""
        return SupervisorState(backend=self.backend.name, status=self._status, restarts=self._restarts,
                               since=self._since, last_problem=self._problem,
                               container_id=self.backend.container_id)

    def on_ready(self, callback: ReadyCallback) -> None:
        """Run ``callback`` (as its own task) each time Stalwart becomes ready after a (re)start."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Make Stalwart run (adopt, start or create it), wait until it is live (``ready_timeout``),
        then watch it. ``StalwartNotReady`` when it could not be started or did not come up; a
        Stalwart that did not come up is stopped again."""
        if self._watch_task is not None:
            return
        self._stopping = False
        async with self._lock:
            self._set("starting")
            try:
                await self._bring_up()
            except StalwartNotReady:
                with contextlib.suppress(BackendError):
                    await self.backend.stop(self.stop_grace)
                raise
        self._watch_task = asyncio.create_task(self._watch(), name="stalwart-health")

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (the agreed signature)
        """Wait until ``/healthz/ready`` answers 200 (``timeout``, default ``ready_timeout``);
        ``StalwartNotReady`` with what was seen otherwise."""
        limit = self.policy.ready_timeout if timeout is None else timeout
        deadline = self.clock() + limit
        seen = "nothing yet"
        while True:
            try:  # a restart in progress is not ready yet: probe between restarts, never during one
                async with asyncio.timeout(max(deadline - self.clock(), 0.01)):
                    await self._lock.acquire()
            except TimeoutError:
                raise StalwartNotReady(f"Stalwart at {self.base_url}: not ready after {limit:g} s (a restart "
                                       f"was still in progress; status {self._status})") from None
            try:
                probe, detail = await self._probe()
                if probe == "ready":
                    self._observe(probe, detail)
                    return
            finally:
                self._lock.release()
            seen = f"{probe}" + (f" ({detail})" if detail else "")
            if self.clock() >= deadline:
                raise StalwartNotReady(f"Stalwart at {self.base_url}/healthz/ready: not ready after {limit:g} s "
                                       f"(last seen: {seen})")
            await asyncio.sleep(min(0.1, limit / 10))

    async def restart(self, reason: str) -> None:
        """Restart Stalwart now, gracefully, and wait until it is live (provisioning calls this after
        ``x:Bootstrap/set``; ``wait_ready`` then waits for ready). ``StalwartNotReady`` when it did not
        come back up; the health loop keeps trying."""
        async with self._lock:
            await self._restart(reason, requested=True)

    async def stop(self) -> None:
        """Stop watching, then stop Stalwart gracefully (SIGTERM, then SIGKILL after ``timeout``).

        A requested restart in progress gives up first (it does not start Stalwart again)."""
        self._stopping = True
        await self._stop_watching()
        async with self._lock:
            try:
                ended = await self.backend.stop(self.stop_grace)
                log.info("stalwart stopped (%s)", ended.describe())
            finally:
                await self.backend.close()
                await self._close_http()
                self._set("stopped")

    async def detach(self) -> None:
        """Stop watching and following its output, leaving Stalwart running (a restart in progress ends
        first).

        For an appliance that exits while Stalwart should keep serving mail (an upgrade of the
        appliance): the next one adopts the container (``docker``). A process (``binary``) cannot be
        adopted and, its output no longer read, may block or die: stop it instead. The status stays
        as it was last seen.
        """
        await self._stop_watching()
        async with self._lock:
            await self.backend.close()
            await self._close_http()

    # -- inside -------------------------------------------------------------------------------------

    def _set(self, status: Status, problem: str | None = None) -> None:
        if status != self._status:
            self._status = status
            self._since = datetime.now(UTC)
        if problem is not None:
            self._problem = problem

    async def _bring_up(self) -> None:
        """Ensure running, then wait live. Status ``failed`` and ``StalwartNotReady`` when not."""
        if self._stopping:
            raise StalwartNotReady("the supervisor is stopping: Stalwart is not started again")
        try:
            done = await self.backend.ensure_running()
        except BackendError as exc:
            self._set("failed", str(exc))
            raise StalwartNotReady(str(exc)) from exc
        log.info("stalwart %s (%s)", done, self.backend.name)
        self._health = msgspec.structs.replace(self._health, started_at=self.clock())
        try:
            await self._wait_live()
        except StalwartNotReady as exc:
            self._set("failed", str(exc))
            raise

    async def _wait_live(self) -> None:
        limit = self.policy.ready_timeout
        deadline = self.clock() + limit
        seen = "nothing yet"
        client = self._client()
        while True:
            if self._stopping:
                raise StalwartNotReady("the supervisor is stopping: no longer waiting for Stalwart to be live")
            try:
                status = await self.backend.status()
            except BackendError as exc:
                raise StalwartNotReady(str(exc)) from exc
            if not status.running:
                raise StalwartNotReady(f"Stalwart ({self.backend.name}) {status.describe()} before answering "
                                       f"{self.base_url}/healthz/live")
            try:
                answer = await client.get(self.base_url + "/healthz/live", timeout=self.probe_timeout)
                if answer.status_code == 200:
                    return
                seen = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                seen = repr(exc)
            if self.clock() >= deadline:
                raise StalwartNotReady(f"Stalwart at {self.base_url}/healthz/live: not live after {limit:g} s "
                                       f"(last seen: {seen})")
            await asyncio.sleep(0.1)

    async def _restart(self, reason: str, *, requested: bool) -> None:
        """Stop gracefully, start, wait live. The lock is held."""
        self._set("restarting", None if requested else reason)
        log.warning("stalwart restarting: %s", reason)
        try:
            ended = await self.backend.stop(self.stop_grace)
            log.info("stalwart stopped for the restart (%s)", ended.describe())
        except BackendError as exc:
            self._set("failed", str(exc))
            raise StalwartNotReady(str(exc)) from exc
        self._restarts += 1
        self._health = restarted(self._health, self.clock(), requested=requested)
        self._set("starting")
        await self._bring_up()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    async def _close_http(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()

    async def _probe(self) -> tuple[Probe, str]:
        """One health probe: the backend's status, then ``/healthz/ready`` (and ``/healthz/live``)."""
        try:
            status = await self.backend.status()
        except BackendError as exc:
            return "unanswered", str(exc)
        if not status.running:
            return "exited", status.describe()
        client = self._client()
        try:
            ready = await client.get(self.base_url + "/healthz/ready", timeout=self.probe_timeout)
            if ready.status_code == 200:
                return "ready", ""
            live = await client.get(self.base_url + "/healthz/live", timeout=self.probe_timeout)
        except httpx.TimeoutException:
            return "unanswered", f"no answer within {self.probe_timeout:g} s"
        except httpx.HTTPError as exc:
            return "unanswered", repr(exc)
        if live.status_code == 200:
            return "live", f"ready answered {ready.status_code}"
        return "failing", f"ready answered {ready.status_code}, live {live.status_code}"

    def _observe(self, probe: Probe, detail: str) -> Verdict:
        """Apply what ``judge`` made of ``probe``; a ``Restart`` is the caller's to carry out."""
        verdict = judge(self.policy, self._health, probe, self.clock(), detail)
        self._health = verdict.health
        if not isinstance(verdict, Keep):
            return verdict
        became_ready = verdict.status == "ready" and self._status != "ready"
        if verdict.status == "unhealthy" and self._status != "unhealthy":
            log.warning("stalwart unhealthy: %s", verdict.problem)
        self._set(verdict.status, verdict.problem)
        if became_ready:
            log.info("stalwart ready")
            for callback in self._callbacks:
                task = asyncio.create_task(_run_callback(callback), name="stalwart-on-ready")
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)
        return verdict

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            async with self._lock:
                try:
                    await self._check()
                except StalwartNotReady as exc:
                    log.error("stalwart restart failed: %s", exc)  # status failed; the next probe retries
                except Exception:
                    log.exception("stalwart health check failed")

    async def _check(self) -> None:
        probe, detail = await self._probe()
        verdict = self._observe(probe, detail)
        if isinstance(verdict, Keep):
            return
        self._set("restarting", verdict.reason)
        log.warning("stalwart %s; restarting in %.1f s", verdict.reason, verdict.delay,
                    extra={"stalwart": {"restart_in": verdict.delay, "restarts": self._restarts}})
        await asyncio.sleep(verdict.delay)
        await self._restart(verdict.reason, requested=False)

    async def _stop_watching(self) -> None:
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _run_callback(callback: ReadyCallback) -> None:
    try:
        await callback()
    except Exception:
        log.exception("stalwart on_ready callback failed")


_STATUSES: tuple[Status, ...] = get_args(Status)


def metrics_lines(state: SupervisorState) -> list[str]:
    """Prometheus text lines for ``state``: ``appliance_stalwart_up``, ``appliance_stalwart_restarts_total``
    and ``appliance_stalwart_status{status="..."}`` (1 for the current status, 0 for the others)."""
    lines = ["# HELP appliance_stalwart_up Whether the supervised Stalwart is ready (1) or not (0).",
             "# TYPE appliance_stalwart_up gauge",
             f"appliance_stalwart_up {1 if state.status == 'ready' else 0}",
             "# HELP appliance_stalwart_restarts_total Restarts of Stalwart by the supervisor since the appliance "
             "started.",
             "# TYPE appliance_stalwart_restarts_total counter",
             f"appliance_stalwart_restarts_total {state.restarts}",
             "# HELP appliance_stalwart_status The supervisor's status of Stalwart (1: the current one).",
             "# TYPE appliance_stalwart_status gauge"]
    lines += [f'appliance_stalwart_status{{status="{s}"}} {1 if s == state.status else 0}' for s in _STATUSES]
    return lines
