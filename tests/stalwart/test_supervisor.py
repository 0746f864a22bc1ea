"""The supervisor with the process backend: the stand-in (or a program that misbehaves) as a real child
process, its health probed over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ApplianceConfig, StalwartConfig
from appliance.errors import ConfigError
from appliance.stalwart.process import ProcessBackend
from appliance.stalwart.supervisor import StalwartNotReady, Supervisor, SupervisorState, metrics_lines

SECRET = {"STALWART_ADMIN_SECRET": "secret"}


def appliance_config(**stalwart: Any) -> ApplianceConfig:
    stalwart.setdefault("jmap_url", "http://127.0.0.1:9")
    return ApplianceConfig(hostname="mx.example.test", stalwart=StalwartConfig(**stalwart))


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Wait for ``condition`` (a bound on a wait, not a timed assertion)."""
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {within} s")


# -- from_config and metrics ------------------------------------------------------------------------


def test_no_supervisor_when_someone_else_runs_stalwart() -> None:
    assert Supervisor.from_config(appliance_config(supervise="none"), SECRET) is None


def test_the_binary_backend_needs_a_command() -> None:
    with pytest.raises(ConfigError, match=r"stalwart.command: .*needs the program and its arguments"):
        Supervisor.from_config(appliance_config(supervise="binary"), SECRET)


def test_supervising_needs_the_jmap_url() -> None:
    with pytest.raises(ConfigError, match=r"stalwart.jmap_url"):
        Supervisor.from_config(appliance_config(supervise="binary", command=["x"], jmap_url=None), SECRET)


def test_supervising_needs_the_admin_secret() -> None:
    with pytest.raises(ConfigError, match=r"stalwart.admin_secret_env: .*STALWART_ADMIN_SECRET is not set"):
        Supervisor.from_config(appliance_config(supervise="binary", command=["x"]), {})


def test_the_docker_backend_is_chosen_by_the_config() -> None:
    supervisor = Supervisor.from_config(appliance_config(supervise="docker"), SECRET)
    assert supervisor is not None
    state = supervisor.state()
    assert (state.backend, state.status, state.restarts, state.container_id) == ("docker", "stopped", 0, None)


def test_the_metrics_show_up_restarts_and_the_one_current_status() -> None:
    supervisor = Supervisor.from_config(appliance_config(supervise="binary", command=["x"]), SECRET)
    assert supervisor is not None
    state = SupervisorState(backend="binary", status="ready", restarts=3, since=supervisor.state().since,
                            last_problem=None, container_id=None)
    lines = metrics_lines(state)
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == ["appliance_stalwart_up 1", "appliance_stalwart_restarts_total 3",
                       'appliance_stalwart_status{status="stopped"} 0',
                       'appliance_stalwart_status{status="starting"} 0',
                       'appliance_stalwart_status{status="ready"} 1',
                       'appliance_stalwart_status{status="unhealthy"} 0',
                       'appliance_stalwart_status{status="restarting"} 0',
                       'appliance_stalwart_status{status="failed"} 0']
    assert "# TYPE appliance_stalwart_restarts_total counter" in lines
    down = metrics_lines(SupervisorState(backend="binary", status="unhealthy", restarts=0, since=state.since,
                                         last_problem="x", container_id=None))
    assert "appliance_stalwart_up 0" in down


# -- programs that do not come up ---------------------------------------------------------------------


async def test_a_program_that_exits_at_once_fails_the_start_with_its_exit_code(tmp_path: Path) -> None:
    config = appliance_config(supervise="binary", command=[sys.executable, "-c", "raise SystemExit(4)"],
                              ready_timeout=30)
    supervisor = Supervisor.from_config(config, SECRET)
    assert supervisor is not None
    with pytest.raises(StalwartNotReady, match=r"exit code 4 before answering http://127.0.0.1:9/healthz/live"):
        await supervisor.start()
    assert supervisor.state().status == "failed"
    assert "exit code 4" in (supervisor.state().last_problem or "")


async def test_a_program_that_never_answers_fails_the_start_and_is_stopped(tmp_path: Path) -> None:
    config = appliance_config(supervise="binary", command=[sys.executable, "-c", "import time; time.sleep(60)"],
                              ready_timeout=0.5, timeout=2)
    supervisor = Supervisor.from_config(config, SECRET)
    assert supervisor is not None
    with pytest.raises(StalwartNotReady, match=r"/healthz/live: not live after 0.5 s \(last seen: ConnectError"):
        await supervisor.start()
    backend = supervisor.backend
    assert isinstance(backend, ProcessBackend) and backend.proc is not None
    assert backend.proc.returncode == -15  # stopped by SIGTERM, not left behind


async def test_a_missing_program_is_named(tmp_path: Path) -> None:
    config = appliance_config(supervise="binary", command=[str(tmp_path / "no-such-stalwart")])
    supervisor = Supervisor.from_config(config, SECRET)
    assert supervisor is not None
    with pytest.raises(StalwartNotReady, match=r"stalwart.command: could not run '.*no-such-stalwart'"):
        await supervisor.start()


async def test_its_output_is_forwarded_into_our_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    program = ("import sys; print('{\"level\": \"error\", \"msg\": \"disk full\", \"free\": 0}', flush=True); "
               "print('plain words', file=sys.stderr, flush=True)")
    backend = ProcessBackend([sys.executable, "-c", program], {})
    await backend.ensure_running()
    await until(lambda: len([r for r in caplog.records if hasattr(r, "stalwart")]) >= 2, "both lines logged")
    ended = await backend.stop(5)
    assert ended.exit_code == 0
    lines = {r.getMessage(): r for r in caplog.records if hasattr(r, "stalwart")}
    assert lines["disk full"].levelno == logging.ERROR
    assert lines["disk full"].stalwart["free"] == 0  # type: ignore[attr-defined]
    assert lines["plain words"].levelno == logging.WARNING


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    program = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
               "time.sleep(60)")
    backend = ProcessBackend([sys.executable, "-c", program], {})
    await backend.ensure_running()
    assert backend.proc is not None and backend.proc.stdout is not None
    await asyncio.sleep(0.3)  # let it install the handler (a SIGTERM before that would end it)
    ended = await backend.stop(0.5)
    assert ended.exit_code == -9
    assert ended.detail == "killed: still running 0.5 s after SIGTERM"
