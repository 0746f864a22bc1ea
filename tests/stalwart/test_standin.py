"""The Stalwart stand-in itself: bootstrap, control endpoints, management, mail JMAP, push, SMTP, hooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.images import free_port
from tests.stalwart.standin_process import StandinProcess

ADMIN = ("admin", "secret")
MGMT_USING = ["urn:ietf:params:jmap:core", "urn:stalwart:jmap"]


def make_standin(tmp_path: Path, configured: bool, **kwargs: Any) -> StandinProcess:
    """A stand-in over ``tmp_path`` (config.json written first when ``configured``)."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir(exist_ok=True)
    if configured:
        (config_dir / "config.json").write_text(json.dumps({"@type": "RocksDb", "path": "/var/lib/stalwart/"}))
    return StandinProcess(tmp_path / "data", config_dir, free_port(), free_port(), **kwargs)


@pytest.fixture
def bootstrapping(tmp_path: Path) -> Iterator[StandinProcess]:
    """A stand-in without config.json (bootstrap mode)."""
    with make_standin(tmp_path, configured=False) as process:
        yield process


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandinProcess]:
    """A configured stand-in."""
    with make_standin(tmp_path, configured=True) as process:
        yield process


def call(process: StandinProcess, *calls: list[Any], using: list[str] | None = None,
         auth: Any = ADMIN) -> list[list[Any]]:
    """POST one JMAP request; its methodResponses."""
    response = httpx.post(f"{process.base_url}/jmap/", auth=auth,
                          json={"using": using or MGMT_USING, "methodCalls": list(calls)})
    assert response.status_code == 200, response.text
    return list(response.json()["methodResponses"])


def control(process: StandinProcess, name: str) -> Any:
    """GET a /_standin/ dump."""
    return httpx.get(f"{process.base_url}/_standin/{name}").json()


# -- bootstrap and health


def test_bootstrap_mode_is_live_but_not_ready(bootstrapping: StandinProcess) -> None:
    assert httpx.get(f"{bootstrapping.base_url}/healthz/live").status_code == 200
    assert httpx.get(f"{bootstrapping.base_url}/healthz/ready").status_code == 503


def test_bootstrap_mode_answers_only_bootstrap_methods(bootstrapping: StandinProcess) -> None:
    responses = call(bootstrapping, ["x:Domain/get", {"ids": None}, "0"], ["x:Bootstrap/get", {}, "1"])
    assert responses[0] == ["error", {"type": "forbidden",
                                      "description": responses[0][1]["description"]}, "0"]
    assert responses[1][0] == "x:Bootstrap/get"
    assert responses[1][1]["list"][0]["id"] == "singleton"


def test_management_without_admin_credentials_is_401(bootstrapping: StandinProcess) -> None:
    body = {"using": MGMT_USING, "methodCalls": [["x:Bootstrap/get", {}, "0"]]}
    assert httpx.post(f"{bootstrapping.base_url}/jmap/", json=body).status_code == 401
    assert httpx.post(f"{bootstrapping.base_url}/jmap", json=body, auth=("admin", "wrong")).status_code == 401


def test_management_without_stalwart_capability_is_unknown_capability(bootstrapping: StandinProcess) -> None:
    response = httpx.post(f"{bootstrapping.base_url}/jmap/", auth=ADMIN, json={
        "using": ["urn:ietf:params:jmap:core"], "methodCalls": [["x:Bootstrap/get", {}, "0"]]})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:ietf:params:jmap:error:unknownCapability"
    assert any("urn:stalwart:jmap" in v for v in control(bootstrapping, "violations"))


def test_bootstrap_set_writes_config_and_restart_makes_it_ready(tmp_path: Path) -> None:
    process = make_standin(tmp_path, configured=False)
    with process:
        responses = call(process, ["x:Bootstrap/set", {"update": {"singleton": {
            "defaultDomain": "example.org", "serverHostname": "mail.example.org",
            "requestTlsCertificate": False, "generateDkimKeys": True}}}, "0"])
        assert responses[0][1]["updated"] == {"singleton": None}
        assert json.loads(process.config_path.read_text()) == {"@type": "RocksDb", "path": "/var/lib/stalwart/"}
        # Effective only after a restart.
        assert httpx.get(f"{process.base_url}/healthz/ready").status_code == 503
    with process:
        assert httpx.get(f"{process.base_url}/healthz/ready").status_code == 200
        settings = call(process, ["x:Bootstrap/get", {}, "0"])[0][1]["list"][0]
        assert settings["serverHostname"] == "mail.example.org"


def test_bootstrap_set_with_a_wrong_type_is_not_updated_and_recorded(bootstrapping: StandinProcess) -> None:
    responses = call(bootstrapping, ["x:Bootstrap/set", {"update": {"singleton": {
        "defaultDomain": "example.org", "generateDkimKeys": "yes"}}}, "0"])
    assert responses[0][1]["notUpdated"]["singleton"] == {"type": "invalidProperties",
                                                          "properties": ["generateDkimKeys"]}
    assert not bootstrapping.config_path.exists()
    assert any("generateDkimKeys" in v for v in control(bootstrapping, "violations"))


# -- control endpoints


def test_unhealthy_makes_ready_503_while_live_stays_200(standin: StandinProcess) -> None:
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 200
    httpx.post(f"{standin.base_url}/_standin/unhealthy")
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 503
    assert httpx.get(f"{standin.base_url}/healthz/live").status_code == 200
    httpx.post(f"{standin.base_url}/_standin/healthy")
    assert httpx.get(f"{standin.base_url}/healthz/ready").status_code == 200


def test_crash_exits_with_status_1(standin: StandinProcess) -> None:
    assert httpx.post(f"{standin.base_url}/_standin/crash").status_code == 200
    assert standin.process is not None
    assert standin.process.wait(10) == 1
    assert "standin.crash" in standin.log_text()


def test_hang_blocks_every_request_including_health(standin: StandinProcess) -> None:
    assert httpx.post(f"{standin.base_url}/_standin/hang").status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{standin.base_url}/healthz/live", timeout=0.5)
    assert standin.process is not None and standin.process.poll() is None


def test_logs_are_one_json_object_per_line(standin: StandinProcess) -> None:
    httpx.get(f"{standin.base_url}/healthz/live")
    lines = [json.loads(line) for line in standin.log_text().splitlines() if line.strip()]
    assert lines[0]["event"] == "server.start"
    assert all({"timestamp", "level", "event", "message"} <= set(line) for line in lines)
    assert any(line["event"] == "http.request" for line in lines)


# -- the image


@pytest.mark.container
def test_image_builds_and_serves_health_from_a_container() -> None:
    import time

    import docker

    from tests.images import docker_available, standin_image

    if not docker_available():
        pytest.skip("no Docker Engine answers here")
    image = standin_image()
    assert image.startswith("appliance-stalwart-standin:")
    port = free_port()
    client = docker.from_env()
    container = client.containers.run(
        image, detach=True, network_mode="host",
        environment={"STALWART_RECOVERY_ADMIN": "admin:secret", "STANDIN_HTTP": f"127.0.0.1:{port}",
                     "STANDIN_SMTP": f"127.0.0.1:{free_port()}"})
    try:
        deadline = time.monotonic() + 30
        live = None
        while time.monotonic() < deadline:
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/healthz/live", timeout=1).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert live == 200, container.logs().decode()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz/ready").status_code == 503  # bootstrap mode
        set_call = ["x:Bootstrap/set", {"update": {"singleton": {"defaultDomain": "example.org"}}}, "0"]
        answer = httpx.post(f"http://127.0.0.1:{port}/jmap/", auth=ADMIN,
                            json={"using": MGMT_USING, "methodCalls": [set_call]})
        assert answer.json()["methodResponses"][0][1]["updated"] == {"singleton": None}  # volume writable by 2000
        first_log = json.loads(container.logs().decode().splitlines()[0])
        assert first_log["event"] == "server.start"
    finally:
        container.remove(force=True, v=True)
        client.close()
