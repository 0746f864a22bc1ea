"""The whole app served by a real uvicorn on 127.0.0.1 in a thread (for streaming and for the CLI)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from litestar import Litestar

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.runtime import Runtime


@dataclass
class Served:
    url: str
    runtime: Runtime
    app: Litestar


@contextmanager
def serve(config: ApplianceConfig, port: int = 0) -> Iterator[Served]:
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(url=f"http://127.0.0.1:{bound}", runtime=app.state.runtime, app=app)
    finally:
        app.state.runtime.begin_shutdown()  # as `appliance run` does on SIGTERM: end the event streams
        server.should_exit = True
        thread.join(15)
