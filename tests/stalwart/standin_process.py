"""The Stalwart stand-in as a plain subprocess on the host: fast tests without Docker, and what
the supervisor can run as "a local stalwart binary" (``command`` and ``env`` are its argv/env)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

SERVER = Path(__file__).resolve().parent / "standin" / "server.py"


class StandinProcess:
    """One stand-in server: config.json in ``config_dir``, state in ``data_dir``, loopback ports.

    Its JSON log (stdout and stderr) goes to ``log_path`` (``data_dir/standin.log`` by default).
    """

    def __init__(
        self,
        data_dir: Path,
        config_dir: Path,
        http_port: int,
        smtp_port: int,
        admin: str = "admin:secret",
        relay: str | None = None,
        public_url: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config_dir = config_dir
        self.http_port = http_port
        self.smtp_port = smtp_port
        self.admin = admin
        self.relay = relay
        self.public_url = public_url
        self.log_path = log_path or data_dir / "standin.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Where its HTTP listens: ``http://127.0.0.1:<http_port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def config_path(self) -> Path:
        """The config.json whose existence means configured mode."""
        return self.config_dir / "config.json"

    @property
    def command(self) -> list[str]:
        """The argv that runs it (with ``env``)."""
        return [sys.executable, str(SERVER), "--config", str(self.config_path)]

    @property
    def env(self) -> dict[str, str]:
        """The environment it runs with: this process's, plus the STALWART_*/STANDIN_* settings."""
        env = dict(os.environ)
        env.update({
            "STALWART_RECOVERY_ADMIN": self.admin,
            "STANDIN_HTTP": f"127.0.0.1:{self.http_port}",
            "STANDIN_SMTP": f"127.0.0.1:{self.smtp_port}",
            "STANDIN_DATA": str(self.data_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("STANDIN_RELAY", None)
        env.pop("STALWART_PUBLIC_URL", None)
        if self.relay:
            env["STANDIN_RELAY"] = self.relay
        if self.public_url:
            env["STALWART_PUBLIC_URL"] = self.public_url
        return env

    def start(self) -> None:
        """Start it (returns at once; see ``wait_ready``)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"stand-in on port {self.http_port} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until it serves HTTP (``/healthz/live`` 200; in configured mode SMTP is up by then)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"stand-in exited before serving; log {self.log_path}:\n{self.log_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz/live", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"stand-in not serving {self.base_url}/healthz/live after {timeout} s")
            time.sleep(0.05)

    def log_text(self) -> str:
        """Its log so far."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate it and wait (killed if it does not end within ``timeout``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> StandinProcess:
        self.start()
        self.wait_ready()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
