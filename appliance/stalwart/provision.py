"""Configuring Stalwart over management JMAP: observe, plan (``appliance.stalwart.setup``), apply, record.

Idempotent: a second run finds nothing to do and changes nothing. Whatever
differs from the configuration (someone deleted the hook, an account, the
appliance's API key) is repaired and logged as drift. Each step is recorded
as soon as Stalwart confirmed it, so a run cut short resumes where it was.
"""

from __future__ import annotations

__all__ = ["Provisioner", "SetupReport"]

import logging
import secrets
from collections.abc import Awaitable, Callable

import httpx
import msgspec

from appliance.stalwart.management import ManagementClient, ManagementError, ManagementObject
from appliance.stalwart.setup import (
    CERTIFICATE_RECORD,
    CreateAccount,
    CreateApiKey,
    CreateCertificate,
    CreateDomain,
    CreateHook,
    DesiredAccount,
    DesiredSetup,
    DestroyHook,
    Observed,
    ObservedCertificate,
    ObservedHook,
    Recorded,
    RecordedAccount,
    ReloadCertificates,
    SetPassword,
    Step,
    UpdateCertificate,
    UpdateHook,
    certificate_object,
    fingerprint,
    hook_object,
    plan,
)
from appliance.store.database import Batch, Database, utc
from appliance.store.stalwart import forget_object, record_object, recorded_objects

log = logging.getLogger("appliance.stalwart")

Restart = Callable[[str], Awaitable[None]]
"""Restarts Stalwart and returns once it is ready again (the supervisor's ``restart`` + ``wait_ready``)."""


class SetupReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one provisioning run did."""

    bootstrapped: bool
    """Stalwart was in bootstrap mode and was given its first configuration."""
    steps: list[str]
    """One line per change made, with its reason; empty when Stalwart was already as configured."""


def _password_credentials(secret: str) -> ManagementObject:
    return {"0": {"@type": "Password", "secret": secret}}  # list properties are index-keyed maps


class Provisioner:
    """Brings one Stalwart to ``desired`` and records what it made."""

    def __init__(self, client: ManagementClient, http: httpx.AsyncClient, base_url: str, db: Database,
                 desired: DesiredSetup, *, restart: Restart | None = None) -> None:
        self.client = client
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.db = db
        self.desired = desired
        self.restart = restart
        self._certificate_id: str | None = None

    async def run(self) -> SetupReport:
        """Bootstrap when needed, then make every object as configured; reload when something changed."""
        bootstrapped = await self._bootstrap()
        recorded = await self._recorded()
        observed = await self.observe()
        steps = plan(self.desired, observed, recorded)
        done: list[str] = []
        domains = dict(observed.domains)
        accounts = dict(observed.accounts)
        for step in steps:
            line = await self._apply(step, domains, accounts)
            (log.warning if step.why.startswith("drift") else log.info)("stalwart setup: %s (%s)", line, step.why)
            done.append(f"{line} ({step.why})")
        if done:
            await self.client.set("Action", create={"reload": {"@type": "ReloadSettings"}})
        return SetupReport(bootstrapped=bootstrapped, steps=done)

    async def _ready(self) -> bool:
        try:
            answer = await self.http.get(self.base_url + "/healthz/ready")
        except httpx.HTTPError as exc:
            raise ManagementError("healthz/ready", "unreachable", f"{self.base_url}: {exc!r}") from exc
        return answer.status_code == 200

    async def _bootstrap(self) -> bool:
        if await self._ready():
            return False
        d = self.desired
        await self.client.set("Bootstrap", update={"singleton": {
            "defaultDomain": d.default_domain, "serverHostname": d.hostname,
            "requestTlsCertificate": d.request_tls, "generateDkimKeys": True}})
        log.info("stalwart setup: bootstrap done (default domain %s, hostname %s); restarting it",
                 d.default_domain, d.hostname)
        if self.restart is None:
            raise ManagementError("x:Bootstrap/set", "restart needed",
                                  "Stalwart was bootstrapped and must be restarted; the appliance does not "
                                  "supervise it ([stalwart] supervise = \"none\"): restart it, then the appliance")
        await self.restart("bootstrapped")
        return True

    async def _recorded(self) -> Recorded:
        objects = await self.db.read(recorded_objects)
        hook = objects.get("hook")
        accounts = {}
        for key, value in objects.items():
            if key.startswith("account:"):
                agent = key.removeprefix("account:")
                api_key = objects.get(f"api-key:{agent}")
                accounts[agent] = RecordedAccount(account_id=value.object_id, password_fingerprint=value.fingerprint,
                                                  api_key_id=api_key.object_id if api_key else None)
        certificate = objects.get(CERTIFICATE_RECORD)
        return Recorded(hook_id=hook.object_id if hook else None, hook_fingerprint=hook.fingerprint if hook else None,
                        accounts=accounts, certificate_id=certificate.object_id if certificate else None,
                        certificate_fingerprint=certificate.fingerprint if certificate else None)

    async def observe(self) -> Observed:
        """What Stalwart holds now."""
        domains = {str(o.get("name", "")).lower(): str(o["id"]) for o in await self.client.get("Domain") if "id" in o}
        accounts = {str(o.get("name", "")).lower(): str(o["id"]) for o in await self.client.get("Account")
                    if "id" in o}
        keys = [str(o["id"]) for o in await self.client.get("ApiKey") if "id" in o]
        hooks = [ObservedHook(id=str(o["id"]), properties=o) for o in await self.client.get("MtaHook") if "id" in o]
        certificates = ([ObservedCertificate(id=str(o["id"]), properties=o)
                         for o in await self.client.get("Certificate") if "id" in o]
                        if self.desired.certificate is not None else [])
        return Observed(domains=domains, accounts=accounts, api_keys=keys, hooks=hooks, certificates=certificates)

    async def _record(self, key: str, object_id: str, *, fingerprint: str | None = None,
                      secret: str | None = None) -> None:
        now = utc()

        def write(batch: Batch) -> None:
            record_object(batch, key, object_id, fingerprint=fingerprint, secret=secret, now=now)

        await self.db.write_batch(write)

    async def _apply(self, step: Step, domains: dict[str, str], accounts: dict[str, str]) -> str:
        """Make one change in Stalwart and record it; the line that says what was done."""
        c = self.client
        if isinstance(step, CreateDomain):
            created = await c.set("Domain", create={"d": {"name": step.name}})
            domains[step.name] = str(created.created["d"]["id"])
            return f"domain {step.name} created"
        if isinstance(step, CreateAccount):
            account_id = await self._create_account(step.account, domains)
            accounts[step.account.agent] = account_id
            return f"account {step.account.agent} created"
        if isinstance(step, SetPassword):
            assert step.account.password is not None  # planned only for an operator's password
            await c.set("Account", update={step.account_id: {"credentials": _password_credentials(
                step.account.password)}})
            await self._record(f"account:{step.account.agent}", step.account_id,
                               fingerprint=fingerprint(step.account.password))
            return f"account {step.account.agent}: password set"
        if isinstance(step, CreateApiKey):
            account_id = accounts[step.agent]
            created = await c.set("ApiKey", create={"k": {"description": f"appliance: {step.agent}"}},
                                  account_id=account_id)
            made = created.created["k"]
            secret = made.get("secret")
            if not isinstance(secret, str) or not secret:
                raise ManagementError("x:ApiKey/set", "no secret in the create response")
            await self._record(f"api-key:{step.agent}", str(made["id"]), secret=secret)
            return f"API key for {step.agent} created"
        if isinstance(step, CreateHook):
            created = await c.set("MtaHook", create={"h": hook_object(self.desired.hook)})
            await self._record("hook", str(created.created["h"]["id"]),
                               fingerprint=fingerprint(self.desired.hook.secret))
            return f"MTA hook to {self.desired.hook.url} created"
        if isinstance(step, UpdateHook):
            await c.set("MtaHook", update={step.id: hook_object(self.desired.hook)})
            await self._record("hook", step.id, fingerprint=fingerprint(self.desired.hook.secret))
            return f"MTA hook {step.id} updated"
        if isinstance(step, CreateCertificate | UpdateCertificate | ReloadCertificates):
            return await self._apply_certificate(step)
        assert isinstance(step, DestroyHook)
        await c.set("MtaHook", destroy=[step.id])

        await self.db.write_batch(lambda batch: forget_object(batch, "hook", step.id))
        return f"MTA hook {step.id} destroyed"

    async def _apply_certificate(self, step: CreateCertificate | UpdateCertificate | ReloadCertificates) -> str:
        wanted = self.desired.certificate
        assert wanted is not None  # planned only for a configured certificate whose file is there
        if isinstance(step, CreateCertificate):
            created = await self.client.set("Certificate", create={"c": certificate_object(wanted)})
            self._certificate_id = str(created.created["c"]["id"])
            await self._record(CERTIFICATE_RECORD, self._certificate_id)  # not loaded yet: no fingerprint
            return f"certificate {wanted.certificate_path} added"
        if isinstance(step, UpdateCertificate):
            await self.client.set("Certificate", update={step.id: certificate_object(wanted)})
            await self._record(CERTIFICATE_RECORD, step.id)
            return f"certificate {step.id} now from {wanted.certificate_path}"
        certificate_id = step.certificate_id or self._certificate_id
        assert certificate_id is not None  # the same run created it
        await self.client.set("Action", create={"tls": {"@type": "ReloadTlsCertificates"}})
        await self._record(CERTIFICATE_RECORD, certificate_id, fingerprint=wanted.fingerprint)
        return f"TLS certificates reloaded (sha256 {wanted.fingerprint[:16]}...)"

    async def _create_account(self, account: DesiredAccount, domains: dict[str, str]) -> str:
        domain_id = domains.get(account.domain)
        if domain_id is None:
            raise ManagementError("x:Account/set", f"no domain {account.domain} for {account.agent}")
        password = account.password or secrets.token_urlsafe(24)  # nobody's: the appliance uses its API key
        created = await self.client.set("Account", create={"a": {
            "@type": "User", "name": account.agent, "domainId": domain_id,
            "credentials": _password_credentials(password), "roles": {"@type": "User"}}})
        account_id = str(created.created["a"]["id"])
        await self._record(f"account:{account.agent}", account_id,
                           fingerprint=fingerprint(account.password) if account.password else None)
        return account_id
