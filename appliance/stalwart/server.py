"""The Stalwart the appliance runs beside, in stalwart mode: supervised, configured, followed.

Start order: the supervisor brings Stalwart up (or, ``supervise = "none"``,
someone else did); provisioning makes it hold the domains, accounts, keys and
the MTA hook (bootstrapping it first when it is new); then the follower
learns of stored mail by push. After every later restart of Stalwart the
setup is checked again and the follower catches up. Deciding is elsewhere:
``setup`` plans, the supervisor's ``restarts`` decides when to restart.
"""

from __future__ import annotations

__all__ = ["StalwartServer", "StalwartUnavailable"]

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from appliance.domains.keys import LocalDkimKeys, SigningDkimKeys
from appliance.errors import ApplianceError
from appliance.runtime import Runtime
from appliance.stalwart.dkim import StalwartDkimKeys
from appliance.stalwart.follower import Follower
from appliance.stalwart.management import ManagementClient, ManagementError, basic_authorization
from appliance.stalwart.provision import Provisioner, SetupReport
from appliance.stalwart.setup import desired_setup
from appliance.stalwart.supervisor import Supervisor, SupervisorState, metrics_lines

log = logging.getLogger("appliance.stalwart")


class StalwartUnavailable(ApplianceError):
    """Stalwart could not be started or configured; the message says what to fix."""


class StalwartServer:
    """Supervisor, provisioning and follower for one appliance."""

    def __init__(self, runtime: Runtime, environ: Mapping[str, str] | None = None) -> None:
        self.runtime = runtime
        self.environ = os.environ if environ is None else environ
        self.supervisor: Supervisor | None = None
        self.provisioner: Provisioner | None = None
        self.follower: Follower | None = None
        self.http: httpx.AsyncClient | None = None
        self.last_setup: SetupReport | None = None
        self.ready_in: float | None = None
        """Seconds from ``start`` to Stalwart running and configured (the figure the README quotes)."""
        self._setup_lock = asyncio.Lock()

    async def start(self) -> None:
        """Bring Stalwart up and configured, then follow it; ``StalwartUnavailable`` says what is wrong."""
        started = time.monotonic()
        config = self.runtime.config
        section = config.stalwart
        base_url = section.jmap_url
        if not base_url:
            raise StalwartUnavailable("stalwart.jmap_url: stalwart mode needs Stalwart's URL (http://127.0.0.1:8080)")
        secret = self.environ.get(section.admin_secret_env, "").strip()
        if not secret:
            raise StalwartUnavailable(f"stalwart.admin_secret_env: environment variable {section.admin_secret_env} "
                                      f"is not set; it is Stalwart's recovery admin password")
        try:
            desired = desired_setup(config, self.environ, self._certificate_file())
        except ValueError as exc:
            raise StalwartUnavailable(str(exc)) from exc
        self.http = httpx.AsyncClient(timeout=section.timeout)
        self.supervisor = Supervisor.from_config(config)
        if self.supervisor is not None:
            await self.supervisor.start()
        management = ManagementClient(self.http, base_url, basic_authorization(section.admin_login, secret))
        self.provisioner = Provisioner(management, self.http, base_url, self.runtime.db, desired,
                                       restart=self._restart if self.supervisor is not None else None)
        try:
            self.last_setup = await self.provisioner.run()
        except ManagementError as exc:
            raise StalwartUnavailable(f"configuring Stalwart at {base_url}: {exc}") from exc
        self.ready_in = time.monotonic() - started
        log.info("stalwart ready and configured in %.2f s (%d change(s))", self.ready_in, len(self.last_setup.steps))
        self.runtime.reception.awaits_store = True  # from now on the follower releases what the hook accepts
        # The manifest publishes Stalwart's keys beside the outbox's own: both sign the mail that leaves.
        self.runtime.dkim_keys = SigningDkimKeys(
            LocalDkimKeys(config.data_path, config.outbound.dkim_selector),
            StalwartDkimKeys(base_url, basic_authorization(section.admin_login, secret), timeout=section.timeout))
        self.follower = Follower(http=self.http, base_url=base_url, db=self.runtime.db,
                                 on_released=self.runtime.wake_dispatcher)
        await self.follower.start()
        self.runtime.every(3600, self.follower.expire, "stalwart-awaiting-expiry")
        if section.tls_certificate:
            self.runtime.every(section.tls_check_interval, self.check_certificate, "stalwart-certificate")
        if self.supervisor is not None:
            self.supervisor.on_ready(self._after_restart)

    def _certificate_file(self) -> bytes | None:
        """The shared certificate's file as it is now; None while it is not there (first issue pending)."""
        path = self.runtime.config.stalwart.tls_certificate
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            log.warning("stalwart.tls_certificate: %s is not there yet; Stalwart keeps its own certificate "
                        "until it is (looked at again every %.0f s)", path,
                        self.runtime.config.stalwart.tls_check_interval)
            return None
        except OSError as exc:
            log.error("stalwart.tls_certificate: cannot read %s: %s", path, exc)
            return None

    async def check_certificate(self) -> None:
        """Give Stalwart the shared certificate when it appeared or was renewed since the last look."""
        if self.provisioner is None or self._setup_lock.locked():
            return
        pem = await asyncio.to_thread(self._certificate_file)
        desired = desired_setup(self.runtime.config, self.environ, pem)
        if desired.certificate == self.provisioner.desired.certificate:
            return
        self.provisioner.desired = desired
        async with self._setup_lock:
            try:
                self.last_setup = await self.provisioner.run()
            except ManagementError as exc:
                log.error("stalwart: the renewed certificate could not be loaded: %s", exc)

    async def _restart(self, reason: str) -> None:
        assert self.supervisor is not None
        await self.supervisor.restart(reason)
        await self.supervisor.wait_ready()

    async def _after_restart(self) -> None:
        """Stalwart came back: its setup is checked again (a restored volume may lack it), then catch up."""
        if self.provisioner is None or self._setup_lock.locked():
            return
        async with self._setup_lock:
            try:
                self.last_setup = await self.provisioner.run()
            except ManagementError as exc:
                log.error("stalwart restarted but could not be configured: %s", exc)
                return
        if self.follower is not None:
            await self.follower.catch_up_all()

    def state(self) -> SupervisorState | None:
        """The supervisor's view, for ``/healthz`` and ``/metrics`` (None: Stalwart is not ours to run)."""
        return self.supervisor.state() if self.supervisor is not None else None

    def metrics(self) -> list[str]:
        state = self.state()
        return metrics_lines(state) if state is not None else []

    async def stop(self) -> None:
        """Stop following, then stop Stalwart gracefully (when ours), then close the connections."""
        if self.follower is not None:
            await self.follower.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.http is not None:
            await self.http.aclose()
