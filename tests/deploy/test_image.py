"""The appliance's image (deploy/Dockerfile) under deploy/compose.yml, the stand-in as Stalwart on a bridge
network: the example configuration and env file filled in, SMTP into the published port, the webhook out
to a receiver on this host (reached from the container as host.docker.internal)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from appliance.config import load_config
from tests.conftest import POLICY
from tests.delivery.receiver import WebhookReceiver
from tests.deploy.images import appliance_image
from tests.dnsserver import DnsTestServer
from tests.images import REPO, docker_available, free_port, standin_image
from tests.stalwart.stack import send

COMPOSE = shutil.which("docker-compose")
pytestmark = [pytest.mark.deploy,
              pytest.mark.skipif(not docker_available(), reason="no Docker Engine answers here"),
              pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed")]

DEPLOY = REPO / "deploy"
AGENT = "agent@example.org"  # the example configuration's agent
EXAMPLE_WEBHOOK = 'webhook_url = "https://agent.example.org/hook"'
SECRETS = {"STALWART_ADMIN_SECRET": "stalwart-admin-secret", "STALWART_HOOK_SECRET": "hook-secret-for-tests",
           "APPLIANCE_ADMIN_TOKEN": "admin-test-token", "AGENT_API_KEY": "agent-api-key-for-tests",
           "AGENT_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
# Through a published port the stand-in sees the network's gateway as the client: some private address.
SENDER_ZONE = [("example.net", "TXT", "v=spf1 ip4:10.0.0.0/8 ip4:172.16.0.0/12 ip4:192.168.0.0/16 -all")]
OVERRIDE = """\
version: "2.4"
services:
  stalwart:
    environment:
      STANDIN_HTTP: "0.0.0.0:8080"
      STANDIN_SMTP: "0.0.0.0:25"
  appliance:
    extra_hosts: ["host.docker.internal:host-gateway"]
"""
"""The stand-in's listeners (where Stalwart's would be) and the name of this host for the appliance."""


def env_file(example: str, values: dict[str, str]) -> str:
    """The env example with every ``KEY=`` line given in ``values`` filled in, the rest kept, ``values``'
    other keys appended; a key the example leaves empty and ``values`` lacks fails the test."""
    lines, given = [], dict(values)
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            assert key in given or value, f"appliance.env.example: {key} is empty and the test gives no value"
            line = f"{key}={given.pop(key, value)}"
        lines.append(line)
    return "\n".join([*lines, *(f"{k}={v}" for k, v in given.items())]) + "\n"


def bridge_gateway() -> str:
    """The default bridge's gateway: the address ``host-gateway`` names, where containers reach this host."""
    import docker

    client = docker.from_env()
    try:
        config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    finally:
        client.close()
    return str(config.get("Gateway") or next(ipaddress.ip_network(config["Subnet"]).hosts()))


class Compose:
    """docker-compose with deploy/compose.yml and the test's override, as one project of its own."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        (root / "override.yml").write_text(OVERRIDE)
        self.project = f"appliance-deploy-{uuid.uuid4().hex[:8]}"
        self.args = [str(COMPOSE), "--env-file", str(root / "appliance.env"), "-p", self.project,
                     "-f", str(DEPLOY / "compose.yml"), "-f", str(root / "override.yml")]
        self.env = {**os.environ, "APPLIANCE_ENV_FILE": str(root / "appliance.env"), **env}

    def __call__(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run([*self.args, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"docker-compose {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
        return done.stdout

    def logs(self, service: str) -> str:
        return self("logs", "--no-color", service)

    def container(self, service: str) -> dict[str, object]:
        """``docker inspect`` of the service's container."""
        cid = self("ps", "-q", service).strip()
        inspected = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True)
        return dict(json.loads(inspected.stdout)[0])

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll ``check()`` until true; on timeout fail with both services' logs."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not within {timeout} s\n--- appliance:\n{self.logs('appliance')[-4000:]}"
                            f"\n--- stalwart:\n{self.logs('stalwart')[-2000:]}")
            time.sleep(0.5)

    @contextlib.contextmanager
    def up(self) -> Iterator[Compose]:
        try:
            self("up", "-d")
            yield self
        finally:
            self("down", "-v", "--remove-orphans", "-t", "30")


def healthz(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def health(compose: Compose, service: str) -> str:
    state = compose.container(service)["State"]
    assert isinstance(state, dict)
    return str(state.get("Health", {}).get("Status", ""))


def config_dir(root: Path, webhook_url: str) -> Path:
    """/etc/appliance as the operator fills it: the example configuration (its webhook URL ours) and a
    policy. Readable by the image's user, which owns none of it."""
    config = root / "config"
    (config / "policies").mkdir(parents=True)
    example = (DEPLOY / "appliance.toml.example").read_text()
    assert EXAMPLE_WEBHOOK in example
    (config / "appliance.toml").write_text(example.replace(EXAMPLE_WEBHOOK, f'webhook_url = "{webhook_url}"'))
    (config / "policies" / "agent.toml").write_text(POLICY)
    for path in (config, config / "policies"):
        path.chmod(0o755)
    for path in (config / "appliance.toml", config / "policies" / "agent.toml"):
        path.chmod(0o644)
    return config


def test_the_compose_example_configuration_is_stalwart_mode_with_stalwart_run_by_compose(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "agent.toml").write_text(POLICY)
    shutil.copy(DEPLOY / "appliance.toml.example", tmp_path / "appliance.toml")
    config = load_config(tmp_path / "appliance.toml", environ={})
    assert (config.mode, config.stalwart.supervise, config.stalwart.manage) == ("stalwart", "none", True)
    assert config.stalwart.jmap_url == "http://stalwart:8080"
    assert config.stalwart.hook_url == "http://appliance:8025/hooks/mta"
    assert config.http.listen == "0.0.0.0:8025"
    assert config.data_dir == "/var/lib/appliance"
    assert [a.address for a in config.agents] == [AGENT]


def test_the_compose_file_publishes_the_mail_ports_on_stalwart_and_only_the_api_on_the_appliance(
        tmp_path: Path) -> None:
    (tmp_path / "appliance.env").write_text(env_file((DEPLOY / "appliance.env.example").read_text(), SECRETS))
    compose = Compose(tmp_path, {})
    services = yaml.safe_load(compose("config"))["services"]
    published = {name: sorted(int(p["target"] if isinstance(p, dict) else str(p).rsplit(":", 1)[1].split("/")[0])
                              for p in service.get("ports", []))
                 for name, service in services.items()}
    assert published == {"stalwart": [25, 443, 465, 587, 993], "appliance": [8025], "stalwart-store": []}
    assert services["stalwart-store"]["restart"] == "no"  # once, before Stalwart: no ports, no secrets
    assert "environment" not in services["stalwart-store"] and "env_file" not in services["stalwart-store"]
    assert services["stalwart"]["image"] == "stalwartlabs/stalwart:v0.16.18"
    assert services["stalwart"]["environment"]["STALWART_RECOVERY_ADMIN"] == "admin:stalwart-admin-secret"
    assert "STALWART_HOOK_SECRET" not in services["stalwart"]["environment"]  # Stalwart gets no appliance secret


def test_a_compose_file_without_the_admin_secret_is_refused_naming_it(tmp_path: Path) -> None:
    values = {**SECRETS, "STALWART_ADMIN_SECRET": ""}
    (tmp_path / "appliance.env").write_text(env_file((DEPLOY / "appliance.env.example").read_text(), values))
    compose = Compose(tmp_path, {})
    done = subprocess.run([*compose.args, "config"], env=compose.env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "STALWART_ADMIN_SECRET" in done.stderr


@pytest.mark.timeout(900)
def test_the_image_under_compose_takes_mail_in_by_smtp_and_calls_the_agents_webhook(tmp_path: Path) -> None:
    image, standin = appliance_image(), standin_image()
    gateway = bridge_gateway()
    smtp_port, http_port = free_port(), free_port()
    with DnsTestServer(SENDER_ZONE, host=gateway) as dns, WebhookReceiver(host=gateway) as receiver:
        config = config_dir(tmp_path, f"http://host.docker.internal:{receiver.port}/hook")
        values = {**SECRETS, "STALWART_IMAGE": standin, "APPLIANCE_IMAGE": image, "CONFIG_DIR": str(config),
                  "APPLIANCE_DNS_NAMESERVERS": json.dumps([dns.address]), "APPLIANCE_DNS_TIMEOUT": "1.0"}
        (tmp_path / "appliance.env").write_text(env_file((DEPLOY / "appliance.env.example").read_text(), values))
        # Loopback only, on free ports: nothing here may take the host's 25 or 443.
        published = {"PUBLISH_SMTP": f"127.0.0.1:{smtp_port}", "PUBLISH_HTTP": f"127.0.0.1:{http_port}",
                     **{name: f"127.0.0.1:{free_port()}"
                        for name in ("PUBLISH_SUBMISSIONS", "PUBLISH_SUBMISSION", "PUBLISH_IMAPS", "PUBLISH_HTTPS")}}
        with Compose(tmp_path, published).up() as compose:
            # First start: stalwart-store names the data store, so nobody has to restart Stalwart by hand.
            compose.wait_for("the appliance healthy (Stalwart ready and configured)",
                             lambda: healthz(http_port) == 200, 180)

            send(smtp_port, "Lunch on Friday?", to=AGENT, timeout=30)
            (request,) = receiver.wait_for(1, timeout=60)
            event = json.loads(request.body)
            assert event["data"]["subject"] == "Lunch on Friday?"
            assert event["data"]["to"] == [AGENT]
            assert event["data"]["auth"]["spf"] == "pass"  # the appliance asked the test's DNS from its container
            assert request.headers["webhook-id"]

            # Both health checks (the image's and compose's for Stalwart) agree with what just worked.
            compose.wait_for("both containers healthy",
                             lambda: (health(compose, "appliance"), health(compose, "stalwart")) == ("healthy",) * 2,
                             90)
            appliance = compose.container("appliance")
            assert appliance["Config"]["User"] == "appliance:appliance"  # type: ignore[index]

            # SIGTERM stops it gracefully, well within stop_grace_period.
            compose("stop", "-t", "90", "appliance")
            assert compose.container("appliance")["State"]["ExitCode"] == 0  # type: ignore[index]
