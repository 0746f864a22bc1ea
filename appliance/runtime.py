"""The running appliance: its parts, started and stopped in order.

``Runtime`` is plain Python, so tests drive it without HTTP. It runs what
every mode shares (database, policies, readers, reception, dispatcher, outbox,
tools, the outbound worker, schedulers); each mode (``appliance.modes``)
starts its own intake around it and hands its parts to the handlers.
"""

from __future__ import annotations

__all__ = ["PartHealth", "Runtime"]

import asyncio
import functools
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from appliance.audit import apply_retention, record_event
from appliance.config import ApplianceConfig
from appliance.delivery.dispatcher import Dispatcher, start_dispatcher
from appliance.delivery.tokens import load_token_key
from appliance.domains.keys import DkimKeys
from appliance.domains.service import poll_domains
from appliance.inbound.readers import ReaderPool
from appliance.inbound.reception import Reception
from appliance.mailauth.dns import resolver_for
from appliance.outbound.service import Outbox, appliance_secrets
from appliance.outbound.worker import OutboundWorker, start_outbound
from appliance.policy.book import PolicyBook, PolicyChange
from appliance.store.database import Database, private_file, utc
from appliance.store.deliveries import remove_finished
from appliance.store.limits import PersistentLimits
from appliance.tools import Tools

log = logging.getLogger("appliance")

StopHook = Callable[[], Awaitable[None]]


class PartHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One part's health as ``/healthz`` shows it."""

    ok: bool
    status: str


class Runtime:
    """Everything one appliance process runs."""

    def __init__(self, config: ApplianceConfig) -> None:
        self.config = config
        self.started = False
        self.ready = False
        """The mode's intake accepts mail (set by the mode, read by ``/healthz``)."""
        self._stop_hooks: list[StopHook] = []
        self._scheduler: AsyncIOScheduler | None = None
        self.db: Database
        self.policies: PolicyBook
        self.reception: Reception
        self.admin_token = ""
        self.agent_keys: dict[str, str] = {}
        """API key -> agent address."""
        self.dispatcher: Dispatcher | None = None
        self.reader: ReaderPool
        """The reader processes every message is parsed in, off the event loop."""
        self.outbox: Outbox | None = None
        """Agents' sends (``POST /api/v1/messages``...)."""
        self.tools: Tools | None = None
        """The operator's tools agents call (``POST /api/v1/tools/{name}``)."""
        self.outbound: OutboundWorker | None = None
        """Sends queued mail through the configured transport (``[outbound] transport``)."""
        self.checks: dict[str, Callable[[], PartHealth]] = {}
        """Parts a mode runs besides the runtime's (Stalwart), by name: ``/healthz`` reports each."""
        self.metric_sources: list[Callable[[], list[str]]] = []
        """Prometheus lines those parts add to ``/metrics``."""
        self.dkim_keys: DkimKeys | None = None
        """Where the domains' DKIM public keys are read (the mode's: Stalwart's own in stalwart mode);
        None: the appliance's signing keys."""

    @property
    def db_path(self) -> Path:
        return self.config.data_path / "appliance.duckdb"

    async def start(self) -> None:
        """Open the database, load policies and limits, start the readers, schedulers and workers."""
        config = self.config
        self.policies = PolicyBook({a.address: config.path(a.policy) for a in config.agents})
        self.db = Database(self.db_path)
        self._stop_hooks.append(self._close_db)
        self.admin_token = self._admin_token()
        self.agent_keys = {os.environ[a.api_key_env]: a.address.lower() for a in config.agents
                           if a.api_key_env and os.environ.get(a.api_key_env)}
        limits = await self.db.read(lambda con: PersistentLimits.load(con, time.time()))
        r = config.reading
        reading = r.limits()
        self.reader = ReaderPool(processes=r.processes, deadline=r.deadline, memory_mb=r.memory_mb, limits=reading)
        self._stop_hooks.append(self.reader.close)
        await self.reader.start()
        self.reception = Reception(
            db=self.db, policies=self.policies, limits=limits,
            resolver=resolver_for(config.dns.nameservers, config.dns.timeout, offline=config.dns.offline),
            hostname=config.hostname, max_message_size=config.smtp.max_message_size,
            max_body_chars=config.delivery.max_body_chars, reader=self.reader, reading=reading,
            refused_raw_days=config.retention.refused_raw_days,
        )
        self.reception.on_committed = lambda _: self.wake_dispatcher()
        self._start_scheduler()
        self.dispatcher = await start_dispatcher(self.db, config)
        self._stop_hooks.append(self.dispatcher.stop)
        secrets_ = appliance_secrets(config, agent_keys=self.agent_keys, admin_token=self.admin_token,
                                     token_key=load_token_key(config.data_path))
        self.outbox = Outbox(db=self.db, config=config, policies=self.policies, limits=limits,
                             tokens=self.dispatcher.tokens, secrets=secrets_)
        self.outbox.on_committed = lambda _: self._wake_outbound()
        self.tools = Tools(db=self.db, tools=config.tools, tokens=self.dispatcher.tokens)
        self._stop_hooks.append(self.tools.close)
        self.outbound = await start_outbound(self.db, config, reception=self.reception,
                                             resolver=self.reception.resolver, on_committed=self.wake_dispatcher)
        self._stop_hooks.append(self.outbound.stop)
        self.started = True
        log.info("appliance started (%s mode, %d agent(s))", config.mode, len(config.agents))

    async def stop(self) -> None:
        """Stop accepting, let transactions in flight finish, flush and close (reverse start order)."""
        self.ready = False
        """The mode's intake accepts mail (set by the mode, read by ``/healthz``)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        while self._stop_hooks:
            hook = self._stop_hooks.pop()
            try:
                await hook()
            except Exception:  # keep stopping the rest; the log says what failed
                log.exception("error while stopping")
        self.started = False

    def wake_dispatcher(self) -> None:
        """Tell the delivery dispatcher new jobs are committed (no-op until it runs)."""
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def _wake_outbound(self) -> None:
        """Tell the outbound worker a send is committed (no-op until it runs)."""
        if self.outbound is not None:
            self.outbound.wake()

    def begin_shutdown(self) -> None:
        """Shutdown begins (before the server drains connections): end the event streams."""
        if self.dispatcher is not None:
            self.dispatcher.close_streams()

    async def _close_db(self) -> None:
        await asyncio.to_thread(self.db.close)

    def _admin_token(self) -> str:
        token = os.environ.get(self.config.http.admin_token_env)
        if token:
            return token
        path = self.config.data_path / "admin.token"
        if path.exists():
            private_file(path)  # an older appliance may have left it readable
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the umask can only narrow 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token

    def every(self, seconds: float, job: Callable[[], Awaitable[object]], job_id: str) -> None:
        """Run ``job`` every ``seconds`` on the runtime's scheduler, one run at a time (a mode's periodic work)."""
        if self._scheduler is None:
            raise RuntimeError(f"{job_id}: the runtime is not started")
        self._scheduler.add_job(job, "interval", seconds=seconds, id=job_id, max_instances=1, coalesce=True,
                                replace_existing=True)

    def _start_scheduler(self) -> None:
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(self.watch_policies, "interval", seconds=1.0, id="policy-watch",
                          max_instances=1, coalesce=True)
        scheduler.add_job(self.apply_retention, "interval", hours=1, id="retention",
                          max_instances=1, coalesce=True)
        scheduler.add_job(self.expire_outbound, "interval", hours=1, id="outbound-expiry",
                          max_instances=1, coalesce=True)
        scheduler.add_job(self.check_domains, "interval", seconds=self.config.domains.verify_interval,
                          id="domain-checks", max_instances=1, coalesce=True)
        scheduler.start()
        self._scheduler = scheduler

    async def check_domains(self) -> None:
        """Check every mail domain's DNS records against its manifest and record the result (history)."""
        await poll_domains(self.db, self.config, keys=self.dkim_keys)

    async def expire_outbound(self) -> None:
        """Remove blobs unused for 24 h and idempotency keys older than 24 h."""
        if self.outbox is not None:
            await self.outbox.expire()

    async def watch_policies(self) -> None:
        """Reload changed policy files; audit every attempt."""
        changes = self.policies.reload_changed()
        for change in changes:
            await self._audit_policy_change(change)

    async def _audit_policy_change(self, change: PolicyChange) -> None:
        kind = "policy.reloaded" if change.ok else "policy.rejected"
        await self.db.write(lambda con: record_event(con, kind, change.agent, change.detail))

    async def apply_retention(self) -> int:
        """Drop audit days past each agent's retentionDays, and finished deliveries as old; fold limit events.

        Dead and failed deliveries stay (the dead-letter list is the operator's to replay or leave).
        Returns the decision rows removed.
        """
        removed = 0
        now = utc()
        for agent in self.policies.agents:
            policy = self.policies.get(agent)
            if policy is None:
                continue
            days = policy.audit_log.retention_days
            removed += await self.db.write(functools.partial(
                _retain, agent=agent, days=days, now=now, raw_days=self.config.retention.refused_raw_days))
        await self.db.write(lambda con: PersistentLimits.compact(con, time.time()))
        return removed


def _retain(con: duckdb.DuckDBPyConnection, *, agent: str, days: int, now: datetime, raw_days: int) -> int:
    removed = apply_retention(con, agent, days, now, refused_raw_days=raw_days)
    remove_finished(con, agent=agent, before=now - timedelta(days=days))
    return removed
