"""The supervisor with the Docker backend, against a real Docker Engine running the stand-in image.

Each test has its own container and volumes (uuid-suffixed names), removed afterwards whatever
happened; the stand-in uses the host's network on free loopback ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import msgspec
import pytest

from appliance.config import ApplianceConfig, StalwartConfig
from appliance.stalwart.engine import MANAGED_LABEL
from appliance.stalwart.supervisor import StalwartNotReady, Supervisor
from tests.images import REPO, docker_available, free_port, standin_image

pytestmark = pytest.mark.container

SECRET = "stalwart-admin-secret"
ENVIRON = {"STALWART_ADMIN_SECRET": SECRET}


class Names(msgspec.Struct, frozen=True):
    container: str
    config_volume: str
    data_volume: str


@pytest.fixture(scope="module")
def image() -> str:
    if not docker_available():
        pytest.skip("no Docker Engine here")
    return standin_image()


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def names(engine: docker.DockerClient) -> Iterator[Names]:
    """Unique names; the containers and volumes made under them are removed afterwards."""
    suffix = uuid.uuid4().hex[:10]
    made = Names(container=f"appliance-test-stalwart-{suffix}", config_volume=f"appliance-test-etc-{suffix}",
                 data_volume=f"appliance-test-data-{suffix}")
    try:
        yield made
    finally:
        for container in engine.containers.list(all=True, filters={"name": made.container}):
            container.remove(force=True)
        for volume in (made.config_volume, made.data_volume):
            with contextlib.suppress(docker.errors.NotFound):
                engine.volumes.get(volume).remove(force=True)


@pytest.fixture
def make_config(image: str, names: Names) -> Callable[..., ApplianceConfig]:
    http_port, smtp_port = free_port(), free_port()

    def make(**overrides: Any) -> ApplianceConfig:
        stalwart: dict[str, Any] = {
            "supervise": "docker", "image": image, "container": names.container,
            "config_volume": names.config_volume, "data_volume": names.data_volume, "network_mode": "host",
            "environment": {"STANDIN_HTTP": f"127.0.0.1:{http_port}", "STANDIN_SMTP": f"127.0.0.1:{smtp_port}"},
            "jmap_url": f"http://127.0.0.1:{http_port}", "health_interval": 0.2, "health_failures": 2,
            "restart_backoff": 0.2, "restart_backoff_max": 60.0, "ready_timeout": 20.0, "timeout": 1.0,
        }
        stalwart.update(overrides)
        return ApplianceConfig(hostname="mx.example.test", stalwart=StalwartConfig(**stalwart))

    return make


def supervisor_for(config: ApplianceConfig) -> Supervisor:
    supervisor = Supervisor.from_config(config, ENVIRON)
    assert supervisor is not None
    return supervisor


async def until(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    """Wait for ``condition`` (a bound on a wait, not a timed assertion)."""
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {within} s")


async def post(base_url: str, path: str, **kwargs: Any) -> httpx.Response | None:
    """A request that may get no answer (a crash or a hang is what it asks for)."""
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            return await client.post(base_url + path, **kwargs)
        except httpx.HTTPError:
            return None


async def configure(supervisor: Supervisor) -> None:
    """What provisioning does to a Stalwart in bootstrap mode: x:Bootstrap/set, restart, wait ready."""
    answer = await post(supervisor.base_url, "/jmap/", auth=("admin", SECRET), json={
        "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
        "methodCalls": [["x:Bootstrap/set", {"update": {"singleton": {
            "defaultDomain": "example.test", "serverHostname": "mx.example.test"}}}, "0"]]})
    assert answer is not None and answer.status_code == 200, answer
    assert answer.json()["methodResponses"][0][1]["updated"] == {"singleton": None}
    await supervisor.restart("configured")
    await supervisor.wait_ready()


@pytest.fixture
async def running(make_config: Callable[..., ApplianceConfig]) -> Any:
    """A started, configured (ready) supervisor; stopped afterwards."""
    supervisor = supervisor_for(make_config())
    try:
        await supervisor.start()
        await configure(supervisor)
        yield supervisor
    finally:
        await supervisor.stop()


def restart_delays(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [r.stalwart["restart_in"] for r in caplog.records  # type: ignore[attr-defined]
            if isinstance(getattr(r, "stalwart", None), dict) and "restart_in" in r.stalwart]  # type: ignore[attr-defined]


async def test_start_creates_a_labelled_container_in_bootstrap_mode_and_configured_it_is_ready(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, names: Names) -> None:
    supervisor = supervisor_for(make_config())
    called: list[str] = []

    async def ready() -> None:
        called.append(supervisor.state().status)

    supervisor.on_ready(ready)
    try:
        await supervisor.start()
        state = supervisor.state()
        assert (state.backend, state.status, state.restarts) == ("docker", "starting", 0)
        container = engine.containers.get(names.container)
        assert state.container_id == container.id
        assert container.labels[MANAGED_LABEL] == "true"
        mounts = {m["Destination"]: m["Name"] for m in container.attrs["Mounts"]}
        assert mounts == {"/etc/stalwart": names.config_volume, "/var/lib/stalwart": names.data_volume}
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["STALWART_RECOVERY_ADMIN"] == f"admin:{SECRET}"
        assert env["STALWART_HOSTNAME"] == "mx.example.test"
        with pytest.raises(StalwartNotReady, match=r"/healthz/ready: not ready after 0.5 s \(last seen: live"):
            await supervisor.wait_ready(0.5)  # bootstrap mode: live, not ready
        await configure(supervisor)
        assert supervisor.state().status == "ready" and supervisor.state().restarts == 1
        await until(lambda: called == ["ready"], "on_ready called once")
        assert supervisor.state().container_id == container.id  # restarted, not recreated
    finally:
        await supervisor.stop()


async def test_a_crash_is_restarted_and_a_second_crash_waits_longer(
        running: Supervisor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.stalwart")
    before = running.state()
    for n in (1, 2):
        await post(running.base_url, "/_standin/crash")
        await until(lambda n=n: running.state().restarts == before.restarts + n, f"restart {n}")  # type: ignore[misc]
        await running.wait_ready()
    assert restart_delays(caplog) == [0.2, 0.4]
    state = running.state()
    assert state.status == "ready" and "exited (exit code" in (state.last_problem or "")
    assert state.container_id == before.container_id


async def test_a_hung_stalwart_is_restarted(running: Supervisor) -> None:
    before = running.state().restarts
    await post(running.base_url, "/_standin/hang")
    await until(lambda: running.state().restarts == before + 1, "restarted")
    await running.wait_ready()
    assert running.state().last_problem == "no answer to the health check (no answer within 1 s), 2 probe(s) in a row"
    assert running.state().status == "ready"


async def test_an_unhealthy_stalwart_is_restarted(running: Supervisor) -> None:
    before = running.state().restarts
    await post(running.base_url, "/_standin/unhealthy")
    await until(lambda: running.state().status == "unhealthy" or running.state().restarts > before, "seen unhealthy")
    await until(lambda: running.state().restarts == before + 1, "restarted")
    await running.wait_ready()
    assert (running.state().last_problem or "").startswith("up but not ready (ready answered 503)")


async def test_stop_stops_the_container_by_sigterm(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, names: Names) -> None:
    supervisor = supervisor_for(make_config(timeout=20.0))
    await supervisor.start()
    await supervisor.stop()
    container = engine.containers.get(names.container)
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] in (0, 128 + signal.SIGTERM)  # 137 would be SIGKILL
    assert supervisor.state().status == "stopped"


async def test_a_second_supervisor_adopts_the_running_container(
        running: Supervisor, make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient,
        names: Names) -> None:
    started_at = engine.containers.get(names.container).attrs["State"]["StartedAt"]
    second = supervisor_for(make_config())
    await second.start()
    try:
        assert second.state().container_id == running.state().container_id
        await second.wait_ready(5)  # ready at once: the same, configured, Stalwart
        assert len(engine.containers.list(all=True, filters={"label": f"{MANAGED_LABEL}=true",
                                                             "name": names.container})) == 1
        assert engine.containers.get(names.container).attrs["State"]["StartedAt"] == started_at  # not restarted
    finally:
        await second.detach()
    assert engine.containers.get(names.container).status == "running"  # detach leaves it running


async def test_a_stopped_container_is_started_again_not_recreated(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, names: Names) -> None:
    first = supervisor_for(make_config())
    await first.start()
    container_id = first.state().container_id
    await first.stop()
    second = supervisor_for(make_config())
    await second.start()
    try:
        assert second.state().container_id == container_id
        assert engine.containers.get(names.container).status == "running"
    finally:
        await second.stop()


async def test_another_image_recreates_the_container_and_the_volumes_survive(
        running: Supervisor, make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient,
        image: str, names: Names) -> None:
    old_id = running.state().container_id
    await running.detach()
    other = f"appliance-test-standin-retag:{names.container.rsplit('-', 1)[1]}"
    engine.images.get(image).tag(other)
    try:
        upgraded = supervisor_for(make_config(image=other))
        await upgraded.start()
        try:
            assert upgraded.state().container_id != old_id
            container = engine.containers.get(names.container)
            assert container.attrs["Config"]["Image"] == other
            await upgraded.wait_ready(10)  # config.json was in the config volume: configured from the start
            answer = await post(upgraded.base_url, "/jmap/", auth=("admin", SECRET), json={
                "using": ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"],
                "methodCalls": [["x:Bootstrap/get", {"ids": ["singleton"]}, "0"]]})
            assert answer is not None
            [settings] = answer.json()["methodResponses"][0][1]["list"]
            assert settings["defaultDomain"] == "example.test"  # kept in the data volume
        finally:
            await upgraded.stop()
    finally:
        engine.images.remove(other)


async def test_without_host_networking_the_ports_are_published(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, names: Names) -> None:
    host_port = free_port()
    config = make_config(network_mode="bridge", ports={"8080": host_port},
                         environment={"STANDIN_HTTP": "0.0.0.0:8080", "STANDIN_SMTP": "0.0.0.0:25"},
                         jmap_url=f"http://127.0.0.1:{host_port}")
    supervisor = supervisor_for(config)
    try:
        await supervisor.start()  # live through the published port
        container = engine.containers.get(names.container)
        assert container.attrs["HostConfig"]["NetworkMode"] == "bridge"
        bindings = container.attrs["HostConfig"]["PortBindings"]
        assert bindings == {"8080/tcp": [{"HostIp": "", "HostPort": str(host_port)}]}
    finally:
        await supervisor.stop()


async def test_a_missing_image_that_cannot_be_pulled_is_named(
        make_config: Callable[..., ApplianceConfig]) -> None:
    supervisor = supervisor_for(make_config(image="appliance-test/no-such-image:never"))
    with pytest.raises(StalwartNotReady, match=r"stalwart.image: image 'appliance-test/no-such-image:never' is "
                                               r"not present locally and could not be pulled"):
        await supervisor.start()
    assert supervisor.state().status == "failed"


async def test_a_container_of_that_name_that_is_not_ours_is_left_alone(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, image: str,
        names: Names) -> None:
    engine.containers.create(image, name=names.container)
    supervisor = supervisor_for(make_config())
    with pytest.raises(StalwartNotReady, match=rf"a container named '{names.container}' exists but is not the "
                                               rf"appliance's \(no label {MANAGED_LABEL}=true\)"):
        await supervisor.start()
    assert engine.containers.get(names.container).status == "created"  # untouched


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
        print("started", flush=True)
        await stop.wait()
        await supervisor.stop()
        print("stopped", flush=True)

    asyncio.run(main())
""")


def test_an_appliance_stopped_by_sigterm_stops_stalwart(
        make_config: Callable[..., ApplianceConfig], engine: docker.DockerClient, names: Names,
        tmp_path: Path) -> None:
    config = make_config(timeout=20.0)
    with subprocess.Popen([sys.executable, "-c", _APPLIANCE, msgspec.json.encode(config).decode()],
                          cwd=REPO, env={**os.environ, **ENVIRON}, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "started\n"
            assert engine.containers.get(names.container).status == "running"
            process.send_signal(signal.SIGTERM)
            assert process.stdout.readline() == "stopped\n"
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    container = engine.containers.get(names.container)
    assert container.status == "exited"
    assert container.attrs["State"]["ExitCode"] in (0, 128 + signal.SIGTERM)
