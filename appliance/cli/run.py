"""``appliance run`` (the process) and ``appliance config check``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import load_config, parse_hostport
from appliance.policy import load_policy

if TYPE_CHECKING:
    from appliance.runtime import Runtime


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
    print(f"{args.file}: ok ({config.mode} mode, {len(config.agents)} agent(s), "
          f"smtp {config.smtp.listen}, http {config.http.listen})")
    return 0


def run_appliance(args: argparse.Namespace) -> int:
    import uvicorn

    from appliance.app import create_app
    from appliance.logs import configure_logging
    from appliance.runtime import Runtime

    config = load_config(args.config)
    for agent in config.agents:  # refuse to start on a bad policy, with the same messages as `policy check`
        load_policy(config.path(agent.policy))
    configure_logging(args.log_level)
    host, port = parse_hostport(config.http.listen, field="http.listen")
    runtime = Runtime(config)
    server = _server_class()(uvicorn.Config(create_app(config, runtime), host=host, port=port, log_config=None,
                                            lifespan="on", timeout_graceful_shutdown=30))
    asyncio.run(_serve(server, runtime))
    return 0 if server.started else 1


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, but SIGTERM/SIGINT end it with exit 0 instead of being re-raised."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


async def _serve(server: Any, runtime: Runtime) -> None:
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        runtime.begin_shutdown()  # end event streams first: uvicorn waits for open connections
        server.handle_exit(sig, None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    await server.serve()
