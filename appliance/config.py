"""The appliance's configuration: a TOML file, overridden by environment variables.

``APPLIANCE_<SECTION>_<KEY>`` overrides ``[section] key`` (``APPLIANCE_SMTP_LISTEN``),
and ``APPLIANCE_<KEY>`` a top-level key (``APPLIANCE_MODE``). Values are
parsed as TOML scalars when they can be (numbers, booleans, arrays), else kept
as strings; a bad value is reported under the variable's name, not the file's.
Relative paths are relative to the configuration file.

``environment_warnings`` lists the secrets the configuration names but the
environment does not hold (``appliance run`` logs one line for each).
"""

from __future__ import annotations

__all__ = [
    "AgentConfig",
    "ApplianceConfig",
    "DeliveryConfig",
    "DnsConfig",
    "DomainsConfig",
    "HookConfig",
    "HttpConfig",
    "OutboundConfig",
    "ReadingConfig",
    "RetentionConfig",
    "SmtpConfig",
    "StalwartConfig",
    "ToolConfig",
    "environment_warnings",
    "load_config",
    "parse_hostport",
    "stalwart_mode_problems",
]

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from appliance.errors import ConfigError, Problem
from appliance.mail.wire import ReadingLimits
from appliance.mailauth.dns import parse_nameserver

_SECTIONS = frozenset({"http", "smtp", "dns", "hook", "delivery", "reading", "outbound", "stalwart", "domains",
                       "retention"})


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every configuration section: immutable, unknown keys refused."""


class HttpConfig(_Section, frozen=True):
    listen: str = "127.0.0.1:8025"
    """Where the HTTP API (hook, agent API, admin, metrics) listens, ``host:port``."""
    admin_token_env: str = "APPLIANCE_ADMIN_TOKEN"
    """Environment variable holding the admin API's bearer token; one is generated into data_dir when unset."""
    metrics_token_env: str | None = None
    """Environment variable holding a bearer token that may read ``/metrics`` and nothing else (for a
    Prometheus scraper); unset, only the admin token may."""
    public_url: str | None = None
    """Where operators reach the appliance's HTTP (``https://mail.example.org``, behind the TLS proxy). An
    ``https`` URL makes the dashboard's session cookie ``Secure`` even when the proxy speaks plain HTTP to us."""
    session_hours: Annotated[float, msgspec.Meta(gt=0)] = 8.0
    """How long a dashboard login lasts; the operator logs in again after it (or after a restart)."""


class SmtpConfig(_Section, frozen=True):
    listen: str = "127.0.0.1:2525"
    """Where the embedded SMTP server listens (sandbox mode)."""
    max_message_size: Annotated[int, msgspec.Meta(ge=1024)] = 26_214_400
    """Largest message accepted, in bytes; advertised as SIZE (RFC 1870)."""
    max_recipients: Annotated[int, msgspec.Meta(ge=1)] = 100
    """RCPT commands allowed per transaction (RFC 5321 4.5.3.1.8 asks for at least 100)."""
    command_timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """Seconds a client may stay silent between commands (RFC 5321 4.5.3.2 suggests 5 minutes)."""
    data_timeout: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    """Seconds a whole DATA transfer may take."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Open SMTP sessions in all; beyond it a new client gets 421 4.7.0 and is closed."""
    max_connections_per_ip: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Open SMTP sessions from one client address (an IPv6 client counts by its /64)."""
    tls_cert: str | None = None
    """PEM certificate chain; STARTTLS is offered when set (with tls_key)."""
    tls_key: str | None = None


class ReadingConfig(_Section, frozen=True):
    """How much work reading one message may cost before it is refused (both intakes)."""

    processes: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Reader processes that parse and extract messages off the event loop; 0 means one per core."""
    deadline: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """Seconds reading one message may take; past it the reader is killed and the message refused
    (``message_too_complex``, 550 5.6.0)."""
    memory_mb: Annotated[int, msgspec.Meta(ge=64)] = 2048
    """Address space of each reader process, in MiB; a message needing more is refused."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 262_144
    """Size of the header block; over it the message is refused (552 5.3.4, ``message_too_large``)."""
    max_header_fields: Annotated[int, msgspec.Meta(ge=10)] = 1_000
    """Header fields in the header block; over it ``message_too_complex``."""
    max_header_line: Annotated[int, msgspec.Meta(ge=78)] = 998
    """Octets of one header line (RFC 5322 2.1.1); over it ``malformed_message``."""
    max_parts: Annotated[int, msgspec.Meta(ge=1)] = 1_000
    """MIME parts in a message (attached messages' included); over it ``message_too_complex``."""
    max_depth: Annotated[int, msgspec.Meta(ge=1)] = 50
    """Nesting of multiparts and attached messages; deeper is ``message_too_complex``."""

    def limits(self) -> ReadingLimits:
        """The limits one reading of a message works under (the readers, the gate, ``policy replay``)."""
        return ReadingLimits(max_header_bytes=self.max_header_bytes, max_header_fields=self.max_header_fields,
                             max_header_line=self.max_header_line, max_parts=self.max_parts,
                             max_depth=self.max_depth)


class DnsConfig(_Section, frozen=True):
    nameservers: list[str] = msgspec.field(default_factory=list)
    """``host:port`` of the resolvers to ask; the system resolver when empty."""
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    offline: bool = False
    """No DNS at all (a laptop sandbox): every lookup is a temporary error, answered at once."""


class HookConfig(_Section, frozen=True):
    secret_env: str = "STALWART_HOOK_SECRET"
    """Environment variable holding the secret Stalwart presents (Bearer, or Basic password)."""


class StalwartConfig(_Section, frozen=True):
    """Where Stalwart's JMAP is (stalwart mode): the appliance's JMAP endpoints forward there."""

    jmap_url: str | None = None
    """Base URL of Stalwart's HTTP listener, ``http://127.0.0.1:8080`` (its session is at
    ``/.well-known/jmap``); required in stalwart mode."""
    admin_secret_env: str = "STALWART_ADMIN_SECRET"
    """Environment variable holding the Stalwart credential the admin token maps to."""
    admin_login: str = "admin"
    """Login sent with the admin secret when it goes as HTTP Basic."""
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Seconds one upstream request may take (the EventSource stream has no read timeout)."""
    manage: bool = True
    """Configure Stalwart over its management JMAP (domains, accounts, keys, the MTA hook) and follow its
    accounts by push to dispatch what it stored; false when someone else configures it and the appliance
    only answers the hook and forwards JMAP (webhooks then go out when the hook accepts)."""
    supervise: Literal["docker", "binary", "none"] = "none"
    """Who runs Stalwart: the appliance through the Docker Engine (``docker``), as a local process
    (``binary``, with ``command``), or someone else (``none``: the appliance only talks to it)."""
    image: str = "stalwartlabs/stalwart:v0.16.18"
    """The image ``docker`` runs (pin a digest in production: ``stalwartlabs/stalwart@sha256:...``)."""
    container: str = "appliance-stalwart"
    """Container name: a restarted appliance adopts a running container of this name."""
    command: list[str] = msgspec.field(default_factory=list)
    """``binary``: the program and its arguments (``["/usr/local/bin/stalwart", "--config", ...]``);
    ``docker``: the container's command, when not the image's own."""
    environment: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra environment for Stalwart (besides ``STALWART_RECOVERY_ADMIN``, ``STALWART_HOSTNAME`` and
    ``STALWART_PUBLIC_URL``, which the supervisor sets)."""
    network_mode: str = "host"
    """Docker network mode. ``host``: Stalwart binds the host's mail ports itself and sees the clients'
    real addresses (SPF needs them); anything else publishes ``ports``."""
    ports: dict[str, int] = msgspec.field(default_factory=dict)
    """Container port to host port (``{"25": 25, "8080": 8080}``) when ``network_mode`` is not ``host``."""
    config_volume: str = "stalwart-etc"
    """Named volume mounted at ``/etc/stalwart``."""
    data_volume: str = "stalwart-data"
    """Named volume mounted at ``/var/lib/stalwart``."""
    public_url: str | None = None
    """Stalwart's public URL (``STALWART_PUBLIC_URL``), ``https://mail.example.org``."""
    hook_url: str | None = None
    """Where Stalwart calls our MTA hook; ``http://127.0.0.1:<http.port>/hooks/mta`` when unset."""
    ready_timeout: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    """Seconds Stalwart may take to answer ``/healthz/ready`` after a start."""
    health_interval: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """Seconds between health probes of a running Stalwart."""
    health_failures: Annotated[int, msgspec.Meta(ge=1)] = 3
    """Consecutive failed probes (unhealthy, or hung: no answer within ``timeout``) before a restart."""
    restart_backoff: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    """Seconds before the first restart; doubled after each restart that did not stay up."""
    restart_backoff_max: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """The cap on the wait between restarts."""
    tls_certificate: str | None = None
    """PEM certificate chain Stalwart presents on SMTP STARTTLS, 465, 587 and 993 (the one HTTPS uses, so
    mail and web share it), at the same path for the appliance and Stalwart (``docker`` mounts its folder
    read-only there). Unset: Stalwart keeps its own. A file not there yet (the first certificate is still
    being issued) is picked up when it appears."""
    tls_private_key: str | None = None
    """The certificate's PEM private key (readable by Stalwart; the appliance never reads it)."""
    tls_check_interval: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    """Seconds between looks at ``tls_certificate``: a renewed certificate is given to Stalwart then."""


class DomainsConfig(_Section, frozen=True):
    """The mail domains' DNS: what the manifest asks for, and how often it is checked."""

    public_address: str | None = None
    """The server's public IPv4/IPv6 address (the VPS's): SPF's ``ip4``/``ip6``, the MX host's
    A/AAAA and the PTR advice. Without it the manifest uses ``a`` and says it could not check PTR."""
    report_local_part: str = "dmarc-reports"
    """DMARC aggregate reports (``rua``) and TLS-RPT go to ``<this>@<domain>``, received by the appliance."""
    verify_interval: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """Seconds between scheduled checks of every domain's records."""
    mta_sts_mode: Literal["testing", "enforce", "none"] = "testing"
    """The ``mode`` of the MTA-STS policy served at ``/.well-known/mta-sts.txt`` (RFC 8461)."""


class RetentionConfig(_Section, frozen=True):
    """What the appliance keeps beside the audit rows (which follow each policy's ``auditLog.retentionDays``)."""

    refused_raw_days: Annotated[int, msgspec.Meta(ge=0)] = 7
    """Days the raw bytes of refused messages (bounced, tempfailed, dropped) are kept, so that
    ``appliance policy replay`` can judge them again under another policy; 0 keeps none. Accepted and
    quarantined mail is in the store already."""


class DeliveryConfig(_Section, frozen=True):
    max_body_chars: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    """Longest ``text``/``html`` put inline in a webhook payload; longer bodies are cut and flagged."""
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    """Seconds one webhook attempt may take."""
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 4
    """Webhook requests in flight per agent."""
    token_ttl: Annotated[int, msgspec.Meta(ge=60)] = 3600
    """Seconds a capability token stays valid."""


class OutboundConfig(_Section, frozen=True):
    """How the agents' mail leaves the appliance."""

    transport: Literal["capture", "smarthost", "direct", "stalwart"] = "capture"
    """``capture`` keeps mail in the Sent mailbox (mail to a local agent goes through its inbound
    gate); ``smarthost`` relays through ``smarthost``; ``direct`` delivers to each domain's MX;
    ``stalwart`` (stalwart mode) submits through Stalwart's JMAP ``EmailSubmission``."""
    smarthost: str | None = None
    """``host:port`` of the relay (port 587 usually)."""
    smarthost_username_env: str | None = None
    """Environment variable with the relay's AUTH user name; no AUTH when unset."""
    smarthost_password_env: str | None = None
    require_tls: bool = True
    """STARTTLS is required on the smarthost (and on a direct MX whose MTA-STS policy enforces it)."""
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    retry_for: Annotated[float, msgspec.Meta(gt=0)] = 432_000.0
    """Seconds a message is retried after 4xx answers or connection failures (5 days), then bounced."""
    dkim_selector: str = "appliance"
    """Selector of the keys ``appliance dkim keygen`` makes: ``<selector>-rsa`` and ``<selector>-ed25519``."""
    display_names: dict[str, str] = msgspec.field(default_factory=dict)
    """Display name per agent address, for the From of its mail."""


class ToolConfig(_Section, frozen=True):
    """A service an agent may call through the appliance, when the sender's grant includes ``capability``."""

    name: str
    """As in ``POST /api/v1/tools/{name}``: letters, digits, ``_`` and ``-``."""
    url: str
    """Where the JSON body is forwarded (``http://`` or ``https://``)."""
    capability: str
    """The capability a token must grant for the call to be forwarded."""
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    description: str = ""
    """What the tool does, for agents and models choosing it."""
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    """JSON schema of the body the tool takes (shown to models; not enforced here)."""


class AgentConfig(_Section, frozen=True):
    address: str
    """The agent's mailbox, ``local@domain``."""
    policy: str
    """Its policy file, relative to the configuration file."""
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    """Environment variable with the webhook secret(s), ``whsec_...``; several separated by spaces for rotation."""
    api_key_env: str | None = None
    """Environment variable with the agent's API key (event stream, usage reports)."""
    stalwart_secret_env: str | None = None
    """Environment variable with the agent's Stalwart password or API key (stalwart mode's JMAP proxy;
    the login is the agent's address)."""


class ApplianceConfig(_Section, frozen=True):
    mode: Literal["sandbox", "stalwart"] = "sandbox"
    hostname: str = "localhost"
    data_dir: str = "var"
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    dns: DnsConfig = msgspec.field(default_factory=DnsConfig)
    hook: HookConfig = msgspec.field(default_factory=HookConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    reading: ReadingConfig = msgspec.field(default_factory=ReadingConfig)
    outbound: OutboundConfig = msgspec.field(default_factory=OutboundConfig)
    stalwart: StalwartConfig = msgspec.field(default_factory=StalwartConfig)
    domains: DomainsConfig = msgspec.field(default_factory=DomainsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    tools: list[ToolConfig] = msgspec.field(default_factory=list)
    agents: list[AgentConfig] = msgspec.field(default_factory=list)
    base_dir: str = "."
    """Directory of the configuration file (set by the loader; relative paths resolve against it)."""

    def path(self, value: str) -> Path:
        """``value`` resolved against the configuration file's directory."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    def agent(self, address: str) -> AgentConfig | None:
        address = address.strip().lower()
        return next((a for a in self.agents if a.address.lower() == address), None)


def parse_hostport(value: str, *, field: str) -> tuple[str, int]:
    """``"127.0.0.1:2525"`` or ``"[::1]:2525"`` to (host, port); ValueError naming the field otherwise."""
    host, sep, port = value.rpartition(":")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        host = ""  # IPv6 must be bracketed, or the port is ambiguous
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{field}: expected host:port, got {value!r}")
    return host, int(port)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> ApplianceConfig:
    """Read, override from the environment, and validate the configuration at ``path``."""
    path = Path(path)
    source = str(path)
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError([Problem(source=source, path="", reason=exc.strerror or str(exc))]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(source=source, path="", reason=f"not valid TOML: {exc}")]) from exc
    overrides = _apply_environment(data, os.environ if environ is None else environ)
    data["base_dir"] = str(path.resolve().parent)
    try:
        config = msgspec.convert(data, ApplianceConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError([_blame(Problem.from_validation(source, exc, ApplianceConfig), overrides)]) from exc
    problems = [_blame(p, overrides) for p in _semantic_problems(config, source)]
    if problems:
        raise ConfigError(problems)
    return config


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply the ``APPLIANCE_*`` overrides to ``data``; return field path -> variable name for each."""
    sections = _SECTIONS
    overrides: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith("APPLIANCE_"):
            continue
        rest = name[len("APPLIANCE_"):].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            target = data.setdefault(section, {})
            if not isinstance(target, dict):  # ``smtp = 1`` in the file: that is the file's fault
                continue
            target[key] = _env_value(value)
            overrides[f"{section}.{key}"] = name
        elif rest in ApplianceConfig.__struct_fields__ and rest not in sections and rest != "agents":
            data[rest] = _env_value(value)
            overrides[rest] = name
    return overrides


def _blame(problem: Problem, overrides: Mapping[str, str]) -> Problem:
    """The problem as the environment variable's when the faulty field came from one."""
    for field, name in overrides.items():
        if problem.path == field or problem.path.startswith((f"{field}.", f"{field}[")):
            return Problem(source=f"environment variable {name}", path=problem.path, reason=problem.reason)
    return problem


def _env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _semantic_problems(config: ApplianceConfig, source: str) -> list[Problem]:
    problems: list[Problem] = []
    for field, value in (("http.listen", config.http.listen), ("smtp.listen", config.smtp.listen)):
        try:
            parse_hostport(value, field=field)
        except ValueError:
            problems.append(Problem(source=source, path=field, reason=f"expected host:port, got {value!r}"))
    for i, ns in enumerate(config.dns.nameservers):
        try:
            parse_nameserver(ns)
        except ValueError as exc:
            problems.append(Problem(source=source, path=f"dns.nameservers[{i}]", reason=str(exc)))
    url = config.stalwart.jmap_url
    if url is not None and not (url.startswith(("http://", "https://")) and url.split("://", 1)[1].strip("/")):
        problems.append(Problem(source=source, path="stalwart.jmap_url",
                                reason=f"expected an http(s) URL, got {url!r}"))
    if config.outbound.transport == "stalwart" and not (config.mode == "stalwart" and url):
        problems.append(Problem(source=source, path="outbound.transport",
                                reason="transport \"stalwart\" needs mode = \"stalwart\" and stalwart.jmap_url"))
    if (config.smtp.tls_cert is None) != (config.smtp.tls_key is None):
        problems.append(Problem(source=source, path="smtp", reason="tls_cert and tls_key go together"))
    stalwart = config.stalwart
    if (stalwart.tls_certificate is None) != (stalwart.tls_private_key is None):
        problems.append(Problem(source=source, path="stalwart", reason="tls_certificate and tls_private_key go "
                                "together (the certificate Stalwart presents, and its key)"))
    for name, path in (("tls_certificate", stalwart.tls_certificate), ("tls_private_key", stalwart.tls_private_key)):
        if path is not None and not path.startswith("/"):
            problems.append(Problem(source=source, path=f"stalwart.{name}",
                                    reason=f"expected an absolute path (Stalwart reads it there), got {path!r}"))
    seen: set[str] = set()
    for i, agent in enumerate(config.agents):
        address = agent.address.lower()
        local, at, domain = address.partition("@")
        if not (local and at and domain):
            problems.append(Problem(source=source, path=f"agents[{i}].address",
                                    reason=f"expected local@domain, got {agent.address!r}"))
        if address in seen:
            problems.append(Problem(source=source, path=f"agents[{i}].address",
                                    reason=f"{agent.address} is listed twice"))
        seen.add(address)
        if not config.path(agent.policy).is_file():
            problems.append(Problem(source=source, path=f"agents[{i}].policy",
                                    reason=f"no such file: {config.path(agent.policy)}"))
        if agent.webhook_url is not None and not agent.webhook_url.startswith(("http://", "https://")):
            problems.append(Problem(source=source, path=f"agents[{i}].webhook_url",
                                    reason=f"expected an http(s) URL, got {agent.webhook_url!r}"))
        if agent.webhook_url is not None and not agent.webhook_secret_env:
            problems.append(Problem(source=source, path=f"agents[{i}].webhook_secret_env",
                                    reason="a webhook_url needs webhook_secret_env (webhooks are always signed)"))
    return problems


def stalwart_mode_problems(config: ApplianceConfig, source: str) -> list[Problem]:
    """What stalwart mode needs of ``[stalwart]``: ``jmap_url`` (its JMAP endpoints forward there).

    Not yet part of ``load_config``: configurations written before ``[stalwart]`` existed (the
    tests' among them) would stop loading; until they name it, stalwart mode without it serves
    JMAP from the appliance's own store.
    """
    if config.mode == "stalwart" and not config.stalwart.jmap_url:
        return [Problem(source=source, path="stalwart.jmap_url",
                        reason="stalwart mode needs Stalwart's JMAP base URL (e.g. http://127.0.0.1:8080)")]
    return []


def environment_warnings(config: ApplianceConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per secret the configuration names but the environment leaves unset or empty."""
    env = os.environ if environ is None else environ

    def unset(name: str | None) -> bool:
        return bool(name) and not env.get(name or "", "").strip()

    warnings: list[str] = []
    for agent in config.agents:
        if agent.webhook_url is not None and unset(agent.webhook_secret_env):
            warnings.append(f"agent {agent.address}: webhook secret ${agent.webhook_secret_env} is not set; "
                            f"its webhooks fail (and are retried) until it is")
        if unset(agent.api_key_env):
            warnings.append(f"agent {agent.address}: API key ${agent.api_key_env} is not set; "
                            f"its event stream, message and usage calls are refused (401)")
    if config.mode == "stalwart" and unset(config.hook.secret_env):
        warnings.append(f"hook: ${config.hook.secret_env} is not set; "
                        f"every call of Stalwart's MTA hook is refused (401)")
    if config.mode == "stalwart" and config.stalwart.jmap_url:
        if unset(config.stalwart.admin_secret_env):
            warnings.append(f"stalwart: admin secret ${config.stalwart.admin_secret_env} is not set; "
                            f"JMAP with the admin token is answered 503")
        for agent in config.agents:
            if config.stalwart.manage:
                break  # the appliance makes each agent's account and its own API key for it
            if not agent.stalwart_secret_env or unset(agent.stalwart_secret_env):
                warnings.append(f"agent {agent.address}: no Stalwart secret "
                                f"(stalwart_secret_env {agent.stalwart_secret_env or 'unset'}); "
                                f"its JMAP calls are answered 503")
    if unset(config.http.metrics_token_env):
        warnings.append(f"http: metrics token ${config.http.metrics_token_env} is not set; "
                        f"only the admin token may read /metrics")
    return warnings
