"""The supervisor with the process backend: the stand-in (or a program that misbehaves) as a real child
process, its health probed over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from appliance.config import ApplianceConfig, StalwartConfig
from appliance.errors import ConfigError
from appliance.stalwart.process import ProcessBackend
from appliance.stalwart.supervisor import StalwartNotReady, Supervisor, SupervisorState, metrics_lines
from tests.images import REPO, free_port
from tests.stalwart.standin_process import StandinProcess

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
               "print('plain words', file=sys.stderr, flush=True); import time; time.sleep(30)")
    backend = ProcessBackend([sys.executable, "-c", program], {})
    await backend.ensure_running()
    await until(lambda: len([r for r in caplog.records if hasattr(r, "stalwart")]) >= 2, "both lines logged")
    ended = await backend.stop(5)
    assert ended.exit_code == -signal.SIGTERM
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


# -- the stand-in as the binary --------------------------------------------------------------------


@pytest.fixture
def standin(tmp_path: Path) -> StandinProcess:
    """The stand-in's command and environment (not started: the supervisor starts it)."""
    process = StandinProcess(tmp_path / "data", tmp_path / "etc", free_port(), free_port(), admin="admin:secret")
    process.data_dir.mkdir()
    process.config_dir.mkdir()
    return process


def standin_config(standin: StandinProcess, **overrides: Any) -> ApplianceConfig:
    environment = {k: v for k, v in standin.env.items() if k.startswith(("STANDIN_", "PYTHON"))}
    stalwart: dict[str, Any] = {
        "supervise": "binary", "command": standin.command, "environment": environment,
        "jmap_url": standin.base_url, "health_interval": 0.2, "health_failures": 2, "restart_backoff": 0.2,
        "restart_backoff_max": 60.0, "ready_timeout": 20.0, "timeout": 2.0,
    }
    stalwart.update(overrides)
    return appliance_config(**stalwart)


@pytest.fixture
async def supervisor(standin: StandinProcess) -> AsyncIterator[Supervisor]:
    """A supervisor of the stand-in, not started; stopped afterwards."""
    made = Supervisor.from_config(standin_config(standin), SECRET)
    assert made is not None
    try:
        yield made
    finally:
        await made.stop()


async def post(url: str, **kwargs: Any) -> httpx.Response | None:
    """A request that may get no answer (a crash or a hang is what it asks for)."""
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            return await client.post(url, **kwargs)
        except httpx.HTTPError:
            return None


async def configure(supervisor: Supervisor) -> None:
    """What provisioning does to a Stalwart in bootstrap mode: x:Bootstrap/set, restart, wait ready."""
    answer = await post(supervisor.base_url + "/jmap/", auth=("admin", "secret"), json={
        "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
        "methodCalls": [["x:Bootstrap/set", {"update": {"singleton": {
            "defaultDomain": "example.test", "serverHostname": "mx.example.test"}}}, "0"]]})
    assert answer is not None and answer.status_code == 200, answer
    assert answer.json()["methodResponses"][0][1]["updated"] == {"singleton": None}
    await supervisor.restart("configured")
    await supervisor.wait_ready()


def restart_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    delays = []
    for record in caplog.records:
        fields = getattr(record, "stalwart", None)
        if isinstance(fields, dict) and "restart_in" in fields:
            delays.append(fields["restart_in"])
    return delays


async def test_a_new_stalwart_is_live_but_not_ready_until_configured_and_restarted(supervisor: Supervisor) -> None:
    calls: list[str] = []

    async def ready() -> None:
        calls.append(supervisor.state().status)

    supervisor.on_ready(ready)
    await supervisor.start()
    assert supervisor.state().status == "starting"
    with pytest.raises(StalwartNotReady, match=r"not ready after 0.3 s \(last seen: live \(ready answered 503\)\)"):
        await supervisor.wait_ready(0.3)
    await configure(supervisor)
    state = supervisor.state()
    assert (state.backend, state.status, state.restarts, state.container_id) == ("binary", "ready", 1, None)
    await until(lambda: calls == ["ready"], "on_ready called")


async def test_a_configured_stalwart_is_ready_without_a_restart(
        supervisor: Supervisor, standin: StandinProcess) -> None:
    standin.config_path.write_text(json.dumps({"@type": "RocksDb", "path": "/var/lib/stalwart/"}))
    await supervisor.start()
    await supervisor.wait_ready()
    assert supervisor.state().status == "ready" and supervisor.state().restarts == 0


async def test_a_crash_is_restarted_each_time_waiting_longer_and_on_ready_runs_again(
        supervisor: Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    readies: list[int] = []

    async def ready() -> None:
        readies.append(supervisor.state().restarts)

    await supervisor.start()
    await configure(supervisor)
    supervisor.on_ready(ready)
    for n in (1, 2):
        await post(supervisor.base_url + "/_standin/crash")
        await until(lambda n=n: supervisor.state().restarts == 1 + n, f"restart {n}")  # type: ignore[misc]
        await supervisor.wait_ready()
    assert restart_delays(caplog) == [0.2, 0.4]
    assert "exited (exit code 1)" in (supervisor.state().last_problem or "")
    await until(lambda: readies == [2, 3], "on_ready after each restart")


async def test_a_hung_stalwart_is_restarted(standin: StandinProcess) -> None:
    supervisor = Supervisor.from_config(standin_config(standin, timeout=1.0), SECRET)  # probes wait 1 s
    assert supervisor is not None
    try:
        await supervisor.start()
        await configure(supervisor)
        await post(supervisor.base_url + "/_standin/hang")
        await until(lambda: supervisor.state().restarts == 2, "restarted")
        await supervisor.wait_ready()
        assert supervisor.state().last_problem == \
            "no answer to the health check (no answer within 1 s), 2 probe(s) in a row"
    finally:
        await supervisor.stop()


async def test_an_unhealthy_stalwart_is_restarted(supervisor: Supervisor) -> None:
    await supervisor.start()
    await configure(supervisor)
    await post(supervisor.base_url + "/_standin/unhealthy")
    await until(lambda: supervisor.state().restarts == 2, "restarted")
    await supervisor.wait_ready()
    assert supervisor.state().last_problem == "up but not ready (ready answered 503), 2 probe(s) in a row"


async def test_stop_ends_it_by_sigterm(supervisor: Supervisor) -> None:
    await supervisor.start()
    await supervisor.stop()
    backend = supervisor.backend
    assert isinstance(backend, ProcessBackend) and backend.proc is not None
    assert backend.proc.returncode == -signal.SIGTERM
    assert supervisor.state().status == "stopped"


async def test_stop_during_a_requested_restart_does_not_start_it_again(supervisor: Supervisor) -> None:
    await supervisor.start()
    restarting = asyncio.create_task(supervisor.restart("configured"))
    await asyncio.sleep(0)  # the restart holds the lock and is stopping the process
    await supervisor.stop()
    with pytest.raises(StalwartNotReady, match="the supervisor is stopping"):
        await restarting
    backend = supervisor.backend
    assert isinstance(backend, ProcessBackend) and backend.proc is not None
    assert backend.proc.returncode is not None
    assert supervisor.state().status == "stopped"


_APPLIANCE = textwrap.dedent("""
    import asyncio, signal, sys
    import msgspec
    from appliance.config import ApplianceConfig
    from appliance.stalwart.supervisor import Supervisor

    async def main() -> None:
        config = msgspec.json.decode(sys.argv[1], type=ApplianceConfig)
        supervisor = Supervisor.from_config(config)
        await supervisor.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(supervisor.backend.pid, flush=True)
        await stop.wait()
        await supervisor.stop()
        print("stopped", flush=True)

    asyncio.run(main())
""")


def test_an_appliance_stopped_by_sigterm_stops_stalwart(standin: StandinProcess) -> None:
    config = standin_config(standin)
    argv = [sys.executable, "-c", _APPLIANCE, msgspec.json.encode(config).decode()]
    with subprocess.Popen(argv, cwd=REPO, env={**os.environ, **SECRET}, stdout=subprocess.PIPE, text=True) as app:
        try:
            assert app.stdout is not None
            child = int(app.stdout.readline())
            assert httpx.get(standin.base_url + "/healthz/live", timeout=5).status_code == 200
            app.send_signal(signal.SIGTERM)
            assert app.stdout.readline() == "stopped\n"
            assert app.wait(timeout=30) == 0
        finally:
            if app.poll() is None:
                app.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # reaped by the appliance: gone
    with pytest.raises(httpx.ConnectError):
        httpx.get(standin.base_url + "/healthz/live", timeout=5)
