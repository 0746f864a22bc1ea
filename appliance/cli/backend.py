"""Where an operator command runs: on the database file, or through the running appliance.

DuckDB lets one process open the file for writing, so while ``appliance run``
is up the CLI cannot open it; then the same command goes through the admin
API on ``http.listen`` with the admin token (``$<http.admin_token_env>``, else
``data_dir/admin.token``). A command gives both ways and ``run`` picks one::

    rows = backend.run(config,
                       local=lambda con: list_deliveries(con, status="dead"),
                       remote=lambda api: api.get("/api/v1/deliveries/", status="dead", into=list[DeliverySummary]))

Handlers wrapped in ``@reports_failures`` turn ``CommandFailed`` into a message and exit status 1.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_ENV",
    "AdminApi",
    "CommandFailed",
    "add_config_argument",
    "admin_token",
    "load",
    "reports_failures",
    "run",
]

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import httpx
import msgspec

from appliance.config import ApplianceConfig, load_config, parse_hostport

T = TypeVar("T")

CONFIG_ENV = "APPLIANCE_CONFIG"
"""Environment variable naming the configuration file when ``--config`` is not given."""


class CommandFailed(Exception):
    """The command could not do what was asked; the message says why (exit status 1)."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, defaulting to ``$APPLIANCE_CONFIG``."""
    default = os.environ.get(CONFIG_ENV)
    parser.add_argument("--config", type=Path, default=default, required=default is None,
                        help=f"the appliance configuration (default: ${CONFIG_ENV})")


def load(args: argparse.Namespace) -> ApplianceConfig:
    config: ApplianceConfig = load_config(args.config)
    return config


def reports_failures(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a ``CommandFailed`` on stderr and return 1 instead of a traceback."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CommandFailed as exc:
            print(f"appliance: {exc}", file=sys.stderr)
            return 1

    return wrapped


def admin_token(config: ApplianceConfig) -> str:
    """The admin API's bearer token, as the running appliance knows it."""
    token = os.environ.get(config.http.admin_token_env, "").strip()
    if token:
        return token
    path = config.data_path / "admin.token"
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise CommandFailed(f"no admin token: ${config.http.admin_token_env} is unset and {path} "
                            f"cannot be read ({exc.strerror})") from exc


class AdminApi:
    """The running appliance's admin API, answers decoded; HTTP errors become ``CommandFailed``."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url
        self._client = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                    headers={"authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None) -> httpx.Response:
        """The raw response of a successful (2xx) request."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, params=clean, json=json)
        except httpx.HTTPError as exc:
            raise CommandFailed(f"the database is held by a running appliance, and its API at {self.base_url} "
                                f"did not answer: {exc}") from exc
        if response.status_code == 401:
            raise CommandFailed(f"the appliance at {self.base_url} refused the admin token")
        if response.is_error:
            raise CommandFailed(_detail(response))
        return response

    def download(self, method: str, path: str, dest: Path) -> httpx.Headers:
        """Stream a successful response's body into ``dest``; return its headers."""
        try:
            with self._client.stream(method, path) as response:
                if response.status_code == 401:
                    raise CommandFailed(f"the appliance at {self.base_url} refused the admin token")
                if response.is_error:
                    response.read()
                    raise CommandFailed(_detail(response))
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                return response.headers
        except httpx.HTTPError as exc:
            raise CommandFailed(f"the database is held by a running appliance, and its API at {self.base_url} "
                                f"did not answer: {exc}") from exc

    def get(self, path: str, *, into: type[T], **params: Any) -> T:
        return self._decode(self.request("GET", path, params=params), into)

    def post(self, path: str, *, into: type[T], json: Any = None, **params: Any) -> T:
        return self._decode(self.request("POST", path, params=params, json=json), into)

    def delete(self, path: str, *, into: type[T], **params: Any) -> T:
        return self._decode(self.request("DELETE", path, params=params), into)

    @staticmethod
    def _decode(response: httpx.Response, into: type[T]) -> T:
        try:
            return msgspec.json.decode(response.content, type=into)
        except msgspec.DecodeError as exc:
            raise CommandFailed(f"unexpected answer from the appliance: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return f"HTTP {response.status_code}: {response.text[:200]}"


@contextlib.contextmanager
def _open_local(path: Path, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection | None]:
    """The database file, or None when a running appliance holds it."""
    if not path.exists():
        raise CommandFailed(f"{path}: no database yet (has the appliance run with this data_dir?)")
    try:
        con = duckdb.connect(str(path), read_only=not write)
    except (duckdb.IOException, duckdb.ConnectionException):
        # IOException: another process holds the lock; ConnectionException: this process does.
        yield None
        return
    try:
        yield con
    finally:
        con.close()


def run(config: ApplianceConfig, *, local: Callable[[duckdb.DuckDBPyConnection], T],
        remote: Callable[[AdminApi], T], write: bool = False, api_timeout: float = 30.0) -> T:
    """``local(con)`` on the database file when no appliance holds it, else ``remote(api)``.

    With ``write``, ``local`` runs in one transaction on a writable connection.
    ``api_timeout``: seconds to wait for the API (for commands that may take longer).
    """
    with _open_local(config.data_path / "appliance.duckdb", write=write) as con:
        if con is not None:
            if not write:
                return local(con)
            con.execute("BEGIN TRANSACTION")
            try:
                result = local(con)
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            return result
    host, port = parse_hostport(config.http.listen, field="http.listen")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # listening on all: ask loopback
    api = AdminApi(f"http://{f'[{host}]' if ':' in host else host}:{port}", admin_token(config),
                   timeout=api_timeout)
    try:
        return remote(api)
    finally:
        api.close()
