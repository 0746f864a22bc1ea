"""What runs Stalwart for the supervisor: the ``Backend`` protocol the Docker engine (``engine``) and a
local process (``process``) both implement, the environment both give Stalwart, and how both forward
its output into our log.

A backend carries out and reports; it decides nothing (when to restart is ``restarts``'s, the order
of things the supervisor's).
"""

from __future__ import annotations

__all__ = ["Backend", "BackendError", "RunStatus", "forward_line", "stalwart_environment"]

import json
import logging
from collections.abc import Mapping
from typing import Literal, Protocol

import msgspec

from appliance.config import ApplianceConfig
from appliance.errors import ApplianceError

log = logging.getLogger("appliance.stalwart")

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
           "fatal": logging.CRITICAL}


class BackendError(ApplianceError):
    """The backend could not do what was asked (the Docker Engine refused, the program is missing...);
    the message says what was tried, on what, and what to fix."""


class RunStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether Stalwart's container or process runs, and how it ended when it does not."""

    running: bool
    exit_code: int | None = None
    """The exit code when it ended (a negative number: killed by that signal, for a process)."""
    detail: str | None = None
    """Anything else worth saying (``OOM killed``, ``container removed``)."""

    def describe(self) -> str:
        """``exit code 137`` / ``exit code 1, OOM killed``, for a reason or problem text."""
        parts = [f"exit code {self.exit_code}"] if self.exit_code is not None else []
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts) or "not running"


class Backend(Protocol):
    """Runs one Stalwart. Every method may raise ``BackendError``."""

    @property
    def name(self) -> Literal["docker", "binary"]: ...

    @property
    def container_id(self) -> str | None:
        """The container's id (``docker``), None for a process or before it exists."""

    async def ensure_running(self) -> str:
        """Make Stalwart run: adopt it when it already does, start it otherwise, and follow its output.

        Returns what was done (``adopted``, ``started``, ``created``, ``recreated``), for the log.
        """

    async def status(self) -> RunStatus:
        """Whether it runs now."""

    async def stop(self, grace: float) -> RunStatus:
        """SIGTERM, ``grace`` seconds to exit, then SIGKILL; returns how it ended."""

    async def close(self) -> None:
        """Stop following its output and let go of it, leaving it as it is (running or not)."""


def stalwart_environment(config: ApplianceConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the supervisor gives Stalwart: ``[stalwart] environment`` plus
    ``STALWART_RECOVERY_ADMIN`` (``<admin_login>:<secret>``), ``STALWART_HOSTNAME`` and, when set,
    ``STALWART_PUBLIC_URL``. ``BackendError`` when the admin secret's variable is unset."""
    section = config.stalwart
    secret = environ.get(section.admin_secret_env, "").strip()
    if not secret:
        raise BackendError(f"stalwart.admin_secret_env: environment variable {section.admin_secret_env} is not "
                           f"set; it holds Stalwart's recovery admin password (STALWART_RECOVERY_ADMIN)")
    env = dict(section.environment)
    env["STALWART_RECOVERY_ADMIN"] = f"{section.admin_login}:{secret}"
    env["STALWART_HOSTNAME"] = config.hostname
    if section.public_url:
        env["STALWART_PUBLIC_URL"] = section.public_url
    return env


def forward_line(line: str, stream: str = "stdout") -> None:
    """One line of Stalwart's output into our log (logger ``appliance.stalwart``).

    A JSON object keeps its fields, under ``extra={"stalwart": {...}}`` (its ``level`` sets the
    record's level, its ``msg``/``message`` the message); any other line is logged as its text.
    """
    text = line.rstrip("\r\n")
    if not text.strip():
        return
    fields: dict[str, object] | None = None
    if text.lstrip().startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            fields = decoded
    if fields is None:
        log.log(logging.WARNING if stream == "stderr" else logging.INFO, "%s", text,
                extra={"stalwart": {"stream": stream}})
        return
    level = _LEVELS.get(str(fields.get("level", "")).lower(), logging.INFO)
    message = fields.get("msg", fields.get("message", text))
    log.log(level, "%s", message, extra={"stalwart": fields})
