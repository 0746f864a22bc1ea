"""What Stalwart must hold for the appliance, and the steps from what it holds now: a pure planner.

``desired_setup`` reads the configuration (and the secrets) once; ``plan``
compares it with what Stalwart reported (``Observed``) and what the
appliance recorded of its own earlier work (``Recorded``), and returns the
steps that close the gap, each with the reason a person reads in the log.
Nothing here does I/O: ``appliance.stalwart.provision`` observes and
applies. Secrets Stalwart does not show back (passwords, the hook's bearer
token) are compared by the fingerprint recorded when they were set.
"""

from __future__ import annotations

__all__ = [
    "CERTIFICATE_RECORD",
    "HOOK_DESCRIPTION",
    "HOOK_STAGES",
    "HOOK_TIMEOUT_MS",
    "CreateAccount",
    "CreateApiKey",
    "CreateCertificate",
    "CreateDomain",
    "CreateHook",
    "DesiredAccount",
    "DesiredCertificate",
    "DesiredHook",
    "DesiredSetup",
    "DestroyHook",
    "Observed",
    "ObservedCertificate",
    "ObservedHook",
    "Recorded",
    "RecordedAccount",
    "ReloadCertificates",
    "SetPassword",
    "Step",
    "UpdateCertificate",
    "UpdateHook",
    "certificate_object",
    "desired_setup",
    "fingerprint",
    "hook_object",
    "plan",
]

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from appliance.config import ApplianceConfig, parse_hostport

HOOK_DESCRIPTION = "appliance policy gate"
"""How the appliance knows its own hook among the ones an operator may have added."""
HOOK_STAGES = ("rcpt", "data")
HOOK_TIMEOUT_MS = 60_000
"""How long Stalwart waits for a decision before it tempfails (451 4.3.5): the gate's own deadlines
(reading, DNS) are shorter, so only a stuck appliance reaches it."""


CERTIFICATE_RECORD = "certificate"
"""The key under which ``appliance.store.stalwart`` records the shared certificate's object and the
fingerprint of the file Stalwart last loaded."""


def fingerprint(secret: str) -> str:
    """What is recorded of a secret Stalwart keeps but does not show back."""
    return hashlib.sha256(secret.encode()).hexdigest()


class DesiredHook(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    secret: str


class DesiredAccount(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    """The account name: the agent's address (Stalwart wants ``local@domain``)."""
    domain: str
    password: str | None
    """The operator's password for it (the agent's ``stalwart_secret_env``) or None: the account then
    gets a random one, and the appliance reaches it with its own API key."""


class DesiredCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """The certificate HTTPS uses, for Stalwart's SMTP, submission and IMAP too (``[stalwart] tls_*``)."""

    certificate_path: str
    private_key_path: str
    fingerprint: str
    """SHA-256 of the certificate file as it is now: a renewal changes it, and Stalwart must reload."""


class DesiredSetup(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    default_domain: str
    request_tls: bool
    """Whether Stalwart fetches its certificate by ACME (its public URL is https)."""
    domains: list[str]
    accounts: list[DesiredAccount]
    hook: DesiredHook
    certificate: DesiredCertificate | None = None
    """None: no shared certificate (not configured, or its first issue is still pending)."""


class ObservedHook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    properties: dict[str, Any]


class ObservedCertificate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    properties: dict[str, Any]


class Observed(msgspec.Struct, frozen=True, kw_only=True):
    """What Stalwart holds now (read over management JMAP)."""

    domains: dict[str, str]
    """Domain name -> id."""
    accounts: dict[str, str]
    """Account name (lowercase) -> id."""
    api_keys: list[str]
    """Ids of the API keys that exist."""
    hooks: list[ObservedHook]
    certificates: list[ObservedCertificate] = []


class RecordedAccount(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    password_fingerprint: str | None
    api_key_id: str | None


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """What the appliance recorded of its own earlier setup (``appliance.store.stalwart``)."""

    hook_id: str | None = None
    hook_fingerprint: str | None = None
    accounts: dict[str, RecordedAccount] = {}
    certificate_id: str | None = None
    certificate_fingerprint: str | None = None
    """The certificate file's fingerprint when Stalwart last loaded it."""


class CreateDomain(msgspec.Struct, frozen=True, kw_only=True, tag="create-domain"):
    name: str
    why: str


class CreateAccount(msgspec.Struct, frozen=True, kw_only=True, tag="create-account"):
    account: DesiredAccount
    why: str


class SetPassword(msgspec.Struct, frozen=True, kw_only=True, tag="set-password"):
    account: DesiredAccount
    account_id: str
    why: str


class CreateApiKey(msgspec.Struct, frozen=True, kw_only=True, tag="create-api-key"):
    agent: str
    why: str


class CreateHook(msgspec.Struct, frozen=True, kw_only=True, tag="create-hook"):
    why: str


class UpdateHook(msgspec.Struct, frozen=True, kw_only=True, tag="update-hook"):
    id: str
    why: str


class DestroyHook(msgspec.Struct, frozen=True, kw_only=True, tag="destroy-hook"):
    id: str
    why: str


class CreateCertificate(msgspec.Struct, frozen=True, kw_only=True, tag="create-certificate"):
    why: str


class UpdateCertificate(msgspec.Struct, frozen=True, kw_only=True, tag="update-certificate"):
    id: str
    why: str


class ReloadCertificates(msgspec.Struct, frozen=True, kw_only=True, tag="reload-certificates"):
    certificate_id: str | None
    """The object whose file was loaded (None: the one the same run creates)."""
    why: str


Step = (CreateDomain | CreateAccount | SetPassword | CreateApiKey | CreateHook | UpdateHook | DestroyHook
        | CreateCertificate | UpdateCertificate | ReloadCertificates)


def desired_setup(config: ApplianceConfig, environ: Mapping[str, str],
                  certificate_pem: bytes | None = None) -> DesiredSetup:
    """What Stalwart must hold for ``config``; ``ValueError`` names a missing secret or setting.

    ``certificate_pem`` is the file at ``[stalwart] tls_certificate`` as read now (None: not there yet).
    """
    secret = environ.get(config.hook.secret_env, "").strip()
    if not secret:
        raise ValueError(f"hook.secret_env: environment variable {config.hook.secret_env} is not set; "
                         f"Stalwart presents it to the appliance's MTA hook")
    if not config.agents:
        raise ValueError("agents: stalwart mode needs at least one agent (its domain is Stalwart's default)")
    accounts = []
    for agent in config.agents:
        address = agent.address.lower()
        password = environ.get(agent.stalwart_secret_env, "").strip() if agent.stalwart_secret_env else ""
        accounts.append(DesiredAccount(agent=address, domain=address.rpartition("@")[2],
                                       password=password if password and not password.startswith("API_") else None))
    domains = sorted({a.domain for a in accounts})
    if config.stalwart.hook_url:
        url = config.stalwart.hook_url
    else:
        host, port = parse_hostport(config.http.listen, field="http.listen")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # a wildcard is not an address to call
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/hooks/mta"
    public = config.stalwart.public_url or ""
    certificate = None
    section = config.stalwart
    if section.tls_certificate and section.tls_private_key and certificate_pem:
        certificate = DesiredCertificate(certificate_path=section.tls_certificate,
                                         private_key_path=section.tls_private_key,
                                         fingerprint=hashlib.sha256(certificate_pem).hexdigest())
    return DesiredSetup(hostname=config.hostname, default_domain=accounts[0].domain,  # the first agent's
                        # Stalwart's own ACME only when nobody hands it the certificate HTTPS uses
                        request_tls=public.startswith("https://") and not section.tls_certificate, domains=domains,
                        accounts=sorted(accounts, key=lambda a: a.agent), hook=DesiredHook(url=url, secret=secret),
                        certificate=certificate)


def certificate_object(certificate: DesiredCertificate) -> dict[str, Any]:
    """The ``x:Certificate`` the appliance wants: both halves read by Stalwart from their files, so a renewed
    file needs only a reload (``ReloadTlsCertificates``), and the key never passes through the appliance."""
    return {"certificate": {"@type": "File", "filePath": certificate.certificate_path},
            "privateKey": {"@type": "File", "filePath": certificate.private_key_path}}


def _file_path(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("@type") == "File" and isinstance(value.get("filePath"), str):
        return str(value["filePath"])
    return None


def _plan_certificate(desired: DesiredSetup, observed: Observed, recorded: Recorded) -> list[Step]:
    wanted = desired.certificate
    if wanted is None:
        return []  # an operator's own certificates are left alone
    ours = [c for c in observed.certificates if c.id == recorded.certificate_id
            or _file_path(c.properties.get("certificate")) == wanted.certificate_path]
    if not ours:
        why = ("drift: the shared certificate is gone from Stalwart" if recorded.certificate_id
               else "first setup: the certificate HTTPS uses, for SMTP, submission and IMAP")
        return [CreateCertificate(why=why), ReloadCertificates(certificate_id=None, why=why)]
    keep = next((c for c in ours if c.id == recorded.certificate_id), ours[0])
    steps: list[Step] = []
    if (_file_path(keep.properties.get("certificate")) != wanted.certificate_path
            or _file_path(keep.properties.get("privateKey")) != wanted.private_key_path):
        steps.append(UpdateCertificate(id=keep.id, why="drift: the certificate's files are not as configured"))
    if steps or keep.id != recorded.certificate_id or recorded.certificate_fingerprint != wanted.fingerprint:
        why = ("the certificate file changed (renewed)" if keep.id == recorded.certificate_id and not steps
               else steps[0].why if steps else "the certificate Stalwart holds was not loaded by the appliance")
        steps.append(ReloadCertificates(certificate_id=keep.id, why=why))
    return steps


def hook_object(hook: DesiredHook) -> dict[str, Any]:
    """The ``x:MtaHook`` the appliance wants (stalwart.md): rcpt and data, tempfail when we fail."""
    return {
        "description": HOOK_DESCRIPTION,
        "url": hook.url,
        "enable": {"else": "true"},
        "stages": {stage: True for stage in HOOK_STAGES},
        "timeout": HOOK_TIMEOUT_MS,
        "tempFailOnError": True,  # never fail open: a hook that cannot answer must not let mail by
        "allowInvalidCerts": False,
        "httpAuth": {"@type": "Bearer", "bearerToken": {"@type": "Value", "secret": hook.secret}},
    }


def _hook_differences(observed: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The properties of ``observed`` that are not as wanted (the secret aside: Stalwart may hide it)."""
    different = []
    for name, value in wanted.items():
        if name == "httpAuth":
            auth = observed.get("httpAuth")
            if not isinstance(auth, dict) or auth.get("@type") != "Bearer":
                different.append("httpAuth")
            continue
        if name == "stages":
            stages = observed.get("stages")
            have = {k for k, v in stages.items() if v} if isinstance(stages, dict) else set()
            if have != set(HOOK_STAGES):
                different.append("stages")
            continue
        if name == "enable" and "enable" not in observed:
            continue  # Stalwart's default is the same
        if observed.get(name) != value:
            different.append(name)
    return different


def _shown_secret(observed: dict[str, Any]) -> str | None:
    auth = observed.get("httpAuth")
    token = auth.get("bearerToken") if isinstance(auth, dict) else None
    if isinstance(token, dict) and token.get("@type") == "Value" and isinstance(token.get("secret"), str):
        return str(token["secret"])
    return None


def _plan_hook(desired: DesiredSetup, observed: Observed, recorded: Recorded) -> list[Step]:
    ours = [h for h in observed.hooks
            if h.properties.get("description") == HOOK_DESCRIPTION or h.properties.get("url") == desired.hook.url]
    if not ours:
        why = ("drift: the appliance's MTA hook is gone from Stalwart" if recorded.hook_id
               else "first setup: the MTA hook")
        return [CreateHook(why=why)]
    keep = next((h for h in ours if h.id == recorded.hook_id), ours[0])
    steps: list[Step] = [DestroyHook(id=h.id, why=f"drift: a second hook to {desired.hook.url}") for h in ours
                         if h is not keep]
    wanted = hook_object(desired.hook)
    different = _hook_differences(keep.properties, wanted)
    shown = _shown_secret(keep.properties)
    if shown is not None:
        secret_changed = shown != desired.hook.secret
    else:
        secret_changed = keep.id != recorded.hook_id or recorded.hook_fingerprint != fingerprint(desired.hook.secret)
    if secret_changed:
        different.append("httpAuth secret")
    if different:
        steps.append(UpdateHook(id=keep.id, why="drift: the MTA hook's " + ", ".join(sorted(set(different)))
                                + " not as configured"))
    return steps


def plan(desired: DesiredSetup, observed: Observed, recorded: Recorded) -> list[Step]:
    """The steps that make Stalwart hold ``desired``: none when it already does."""
    steps: list[Step] = [CreateDomain(name=d, why="first setup" if not recorded.accounts else "drift: domain missing")
                         for d in desired.domains if d not in observed.domains]
    keys = set(observed.api_keys)
    for account in desired.accounts:
        mine = recorded.accounts.get(account.agent)
        account_id = observed.accounts.get(account.agent)
        if account_id is None:
            why = "drift: the agent's account is gone" if mine else "first setup: the agent's account"
            steps.append(CreateAccount(account=account, why=why))
            steps.append(CreateApiKey(agent=account.agent, why="the appliance's key for the new account"))
            continue
        if account.password is not None and (mine is None or mine.account_id != account_id
                                             or mine.password_fingerprint != fingerprint(account.password)):
            steps.append(SetPassword(account=account, account_id=account_id,
                                     why="the agent's password (stalwart_secret_env) changed"))
        if mine is None or mine.account_id != account_id or mine.api_key_id not in keys:
            steps.append(CreateApiKey(agent=account.agent, why="drift: the appliance's API key is gone"
                                      if mine and mine.api_key_id else "the appliance's key for the account"))
    steps.extend(_plan_hook(desired, observed, recorded))
    steps.extend(_plan_certificate(desired, observed, recorded))
    return steps
