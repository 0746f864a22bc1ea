"""``appliance run`` (the process) and ``appliance config check``.

Start-up problems an operator must fix (a port in use, the database held by
another process) end the process with one line on stderr and exit status 1,
never a traceback: ``appliance: SMTP port 127.0.0.1:2525 is in use (by pid 1234 'python3')``.
"""

from __future__ import annotations

__all__ = ["PortUnavailable", "bind_listener", "check_port_free", "port_holders", "register", "startup_warnings"]

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ApplianceConfig, environment_warnings, load_config, parse_hostport
from appliance.policy import load_policy

if TYPE_CHECKING:
    from appliance.runtime import Runtime

log = logging.getLogger("appliance")


def register(groups: Any) -> None:
    run = groups.add_parser("run", help="run the appliance (SMTP intake, gate, store, API)")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(handler=run_appliance)

    config = groups.add_parser("config", help="check an appliance configuration")
    sub = config.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate a configuration file and the policies it names")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=run_config_check)


def run_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    for agent in config.agents:
        load_policy(config.path(agent.policy))
    for warning in startup_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: ok ({config.mode} mode, {len(config.agents)} agent(s), "
          f"smtp {config.smtp.listen}, http {config.http.listen})")
    return 0


def startup_warnings(config: ApplianceConfig) -> list[str]:
    """What the environment lacks for this configuration (unset secrets, malformed webhook secrets)."""
    from appliance.delivery.signing import load_secrets

    warnings = environment_warnings(config)
    for agent in config.agents:
        name = agent.webhook_secret_env
        if agent.webhook_url is not None and name and os.environ.get(name, "").strip():
            try:
                load_secrets(name)
            except ValueError as exc:
                warnings.append(f"agent {agent.address}: {exc}; its webhooks fail until it is fixed")
    return warnings


# -- ports ------------------------------------------------------------------------------------------


class PortUnavailable(Exception):
    """A listening address cannot be had; the message names it and, when it can, who holds it."""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listener(label: str, host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` the way uvicorn and asyncio bind theirs (SO_REUSEADDR).

    PortUnavailable, in one line, when the address is in use or cannot be bound.
    """
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive answer waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(_describe_bind_error(label, host, port, exc)) from None
    return sock


def check_port_free(label: str, host: str, port: int) -> None:
    """PortUnavailable unless ``host:port`` could be bound now (it is released again at once)."""
    bind_listener(label, host, port).close()


def _describe_bind_error(label: str, host: str, port: int, exc: OSError) -> str:
    where = f"{label} port {_address(host, port)}"
    if exc.errno == errno.EADDRINUSE:
        holders = port_holders(port)
        if holders:
            by = ", ".join(f"pid {pid} {name!r}" for pid, name in holders)
            return f"{where} is in use (by {by})"
        return f"{where} is in use (by another process: `ss -ltnp 'sport = :{port}'` shows which)"
    if exc.errno == errno.EACCES:
        return f"{where} cannot be bound: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where} cannot be bound: {host} is not an address of this host"
    return f"{where} cannot be bound: {exc.strerror or exc}"


def port_holders(port: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(pid, command name) of the processes listening on TCP ``port``, as far as /proc shows them.

    Linux only; elsewhere, or for other users' processes without privileges, the list is shorter or empty.
    """
    inodes: set[str] = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            rows = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            with contextlib.suppress(ValueError):
                if int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    found: list[tuple[int, str]] = []
    try:
        entries = sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return []
    for entry in entries:
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in inodes:
                try:
                    name = (entry / "comm").read_text().strip()
                except OSError:
                    name = "?"
                found.append((int(entry.name), name))
                break
    return found


# -- the process ------------------------------------------------------------------------------------


def run_appliance(args: argparse.Namespace) -> int:
    import uvicorn

    from appliance.app import create_app
    from appliance.logs import configure_logging
    from appliance.runtime import Runtime

    config = load_config(args.config)
    for agent in config.agents:  # refuse to start on a bad policy, with the same messages as `policy check`
        load_policy(config.path(agent.policy))
    configure_logging(args.log_level)
    for warning in startup_warnings(config):
        log.warning(warning)
    host, port = parse_hostport(config.http.listen, field="http.listen")
    try:
        if config.mode == "sandbox":
            smtp_host, smtp_port = parse_hostport(config.smtp.listen, field="smtp.listen")
            check_port_free("SMTP", smtp_host, smtp_port)
        # HTTP is bound here and handed to uvicorn: a second appliance fails now, before opening anything.
        http_socket = bind_listener("HTTP", host, port)
    except PortUnavailable as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    runtime = Runtime(config)
    app = _StartupWatch(create_app(config, runtime))
    server = _server_class()(uvicorn.Config(app, host=host, port=port, log_config=None,
                                            lifespan="on", timeout_graceful_shutdown=30))
    uvicorn_log = logging.getLogger("uvicorn.error")
    quiet = _DropStartupFailure(app)
    uvicorn_log.addFilter(quiet)
    try:
        log.info("HTTP API on http://%s", _address(host, port))
        asyncio.run(_serve(server, runtime, app, http_socket))
    finally:
        uvicorn_log.removeFilter(quiet)
        http_socket.close()
    if app.error is not None:
        print(f"appliance: cannot start: {_one_line(app.error, config)}", file=sys.stderr)
        return 1
    return 0 if server.started else 1


def _one_line(error: BaseException, config: ApplianceConfig) -> str:
    """The cause of a failed start-up, as one line (exception groups unwrapped)."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(error)
    lines = []
    for exc in leaves:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE and config.mode == "sandbox":
            host, port = parse_hostport(config.smtp.listen, field="smtp.listen")
            lines.append(_describe_bind_error("SMTP", host, port, exc))  # taken since we checked it
            continue
        text = " ".join(str(exc).split()) or type(exc).__name__
        ours = type(exc).__module__.startswith("appliance")  # our messages say what is wrong already
        lines.append(text if ours else f"{type(exc).__name__}: {text}")
    return "; ".join(dict.fromkeys(lines))


class _StartupWatch:
    """The ASGI app, noting why its lifespan start-up failed (``error``) instead of letting it be logged.

    Litestar formats the traceback into the ``lifespan.startup.failed`` message and uvicorn logs it;
    here the message is emptied and ``appliance run`` prints the cause in one line.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None
        self.failed = False

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watched_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.failed = True
                message = {"type": message["type"], "message": ""}
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except BaseException as exc:
            if self.failed and self.error is None:
                self.error = exc
            raise


class _DropStartupFailure(logging.Filter):
    """uvicorn's own "Application startup failed" line: ``appliance run`` says why instead."""

    def __init__(self, watch: _StartupWatch) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.watch.failed and record.getMessage().startswith("Application startup failed"))


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end it with exit 0 instead of being re-raised."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


async def _serve(server: Any, runtime: Runtime, watch: _StartupWatch, http_socket: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        runtime.begin_shutdown()  # end event streams first: uvicorn waits for open connections
        server.handle_exit(sig, None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await server.serve(sockets=[http_socket])
    except SystemExit:  # uvicorn's exit after a failed lifespan start-up
        if watch.error is None:
            raise
    if watch.error is not None:
        try:
            await runtime.stop()  # release what start() had opened before it failed
        except Exception:  # the start-up error is the one to report
            log.debug("stopping after a failed start-up", exc_info=True)
