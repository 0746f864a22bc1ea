"""The Ansible deployment: lint, and ansible/site.yml applied to a fresh Debian VPS in a container
(tests/deploy/target.py), then checked from outside over SSH, SMTP and TCP like an operator would.

The target runs systemd as PID 1 and its own Docker Engine (installed by the `docker` role); the
Stalwart stand-in image is loaded into that engine, so the appliance's supervisor runs it there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from tests.delivery.receiver import WebhookReceiver
from tests.deploy.target import DeployTarget
from tests.images import REPO, docker_available, standin_image

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.skipif(not docker_available(), reason="needs a Docker Engine"),
]

ANSIBLE = REPO / "ansible"
SITE = ANSIBLE / "site.yml"
EXAMPLE = ANSIBLE / "inventory" / "example"
SMOKE = Path(__file__).resolve().parent / "smoke.yml"
ENGINE = Path(__file__).resolve().parent / "engine.yml"
BIN = Path(sys.executable).parent
MAIL_PORTS = frozenset({22, 25, 465, 587, 993, 443})
"""What the firewall opens (issue 12): SSH, SMTP, submissions, submission, IMAPS, HTTPS."""
AGENT = "agent@example.test"
HOSTNAME = "mx.example.test"
SENDER = "alice@example.net"


class Recap(msgspec.Struct, frozen=True, kw_only=True):
    """One host's line of Ansible's PLAY RECAP."""

    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


class PlaybookRun(msgspec.Struct, frozen=True, kw_only=True):
    """An ansible-playbook run: how long it took, its exit status, the recap and the whole output."""

    seconds: float
    returncode: int
    recap: Recap | None
    output: str

    def explain(self) -> str:
        """The output's tail, for an assertion message."""
        return f"exit {self.returncode}, recap {self.recap}:\n" + "\n".join(self.output.splitlines()[-60:])


class Opening(msgspec.Struct, frozen=True, order=True):
    """A port the firewall lets in: ``protocol`` tcp or udp, ``port`` 0 for every port."""

    protocol: str
    port: int


def play_recap(output: str, host: str) -> Recap | None:
    """``host``'s counts in the PLAY RECAP of ansible-playbook's ``output`` (None without a recap)."""
    found = None
    for line in output.splitlines():
        fields = line.split()
        if fields[:2] == [host, ":"]:
            counts = dict(field.split("=", 1) for field in fields[2:] if "=" in field)
            found = Recap(**{name: int(value) for name, value in counts.items() if name in Recap.__struct_fields__})
    return found


def _dport_values(right: Any) -> list[int]:
    """The ports a dport match's right-hand side names: a port, a set of ports, ranges (expanded)."""
    if isinstance(right, int):
        return [right]
    if isinstance(right, dict) and "set" in right:
        return [port for item in right["set"] for port in _dport_values(item)]
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        return list(range(int(low), int(high) + 1))
    raise ValueError(f"nft ruleset: a dport match against {right!r}, expected a port, a set or a range")


def _rule_openings(expressions: list[dict[str, Any]]) -> set[Opening] | None:
    """What an accepting rule lets in: its TCP/UDP destination ports; None for a rule that does not accept
    new traffic by port (loopback, established/related, ICMP) or does not accept."""
    if not any("accept" in expression for expression in expressions):
        return None
    protocols: set[str] = set()
    ports: list[int] = []
    matches = [expression["match"] for expression in expressions if "match" in expression]
    for match in matches:
        left = match.get("left", {})
        payload = left.get("payload", {}) if isinstance(left, dict) else {}
        meta = left.get("meta", {}) if isinstance(left, dict) else {}
        if payload.get("field") == "dport":
            if payload.get("protocol") in ("tcp", "udp"):
                protocols.add(payload["protocol"])
            ports.extend(_dport_values(match["right"]))
        elif meta.get("key") == "l4proto":
            right = match["right"]
            protocols.update(right["set"] if isinstance(right, dict) else [right])
    if not matches:
        return {Opening("tcp", 0), Opening("udp", 0)}  # accepts everything
    if not ports:
        return None
    return {Opening(protocol, port) for protocol in protocols or {"tcp", "udp"} for port in ports}


def firewall_openings(ruleset: str) -> frozenset[Opening]:
    """The ports open to new inbound traffic in ``nft -j list ruleset`` output.

    Every input base chain must accept a packet, so the openings are those of the chains that drop by
    default (the others, like iptables-nft's empty INPUT, let through what these let through); rules in
    chains they jump to count as theirs. Raises ValueError when no input chain drops by default.
    """
    items = json.loads(ruleset)["nftables"]
    chains = {(c["family"], c["table"], c["name"]): c for c in (i["chain"] for i in items if "chain" in i)}
    rules: dict[tuple[str, str, str], list[list[dict[str, Any]]]] = {}
    for item in items:
        if "rule" in item:
            rule = item["rule"]
            rules.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(rule["expr"])

    def chain_openings(key: tuple[str, str, str], seen: frozenset[tuple[str, str, str]]) -> set[Opening]:
        found: set[Opening] = set()
        for expressions in rules.get(key, []):
            found |= _rule_openings(expressions) or set()
            for expression in expressions:
                target = expression.get("jump") or expression.get("goto")
                if target and (key[0], key[1], target["target"]) not in seen:
                    jumped = (key[0], key[1], target["target"])
                    found |= chain_openings(jumped, seen | {jumped})
        return found

    dropping = [key for key, chain in chains.items() if chain.get("hook") == "input" and chain.get("policy") == "drop"]
    if not dropping:
        raise ValueError("nft ruleset: no input chain with policy drop (everything is open)")
    openings = [chain_openings(key, frozenset({key})) for key in dropping]
    return frozenset(set.intersection(*openings))


def listening_ports(ss_output: str) -> frozenset[int]:
    """The TCP ports in ``ss -ltnH`` output that listen beyond loopback."""
    ports = set()
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            address, _, port = fields[3].rpartition(":")
            if not address.startswith(("127.", "[::1]")):
                ports.add(int(port))
    return frozenset(ports)


def ansible_env(vault_password_file: Path | None = None) -> dict[str, str]:
    """The environment ansible-playbook runs in: the venv's tools, ansible/ansible.cfg, no colours."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    if (ANSIBLE / "ansible.cfg").exists():
        env["ANSIBLE_CONFIG"] = str(ANSIBLE / "ansible.cfg")
    if vault_password_file is not None:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file)
    env["ANSIBLE_ROLES_PATH"] = str(ANSIBLE / "roles")  # for engine.yml, which lives here
    return env


def run_playbook(playbook: Path, inventory: Path, *extra: str, env: dict[str, str] | None = None,
                 timeout: float = 900) -> PlaybookRun:
    """ansible-playbook ``playbook`` against ``inventory``, timed."""
    started = time.monotonic()
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
        capture_output=True, text=True, env=env or ansible_env(), timeout=timeout, cwd=REPO,
    )
    output = done.stdout + done.stderr
    return PlaybookRun(seconds=time.monotonic() - started, returncode=done.returncode,
                       recap=play_recap(output, "vps"), output=output)


def send_mail(host: str, subject: str) -> None:
    """One message from SENDER to AGENT over SMTP to ``host``:25."""
    message = EmailMessage()
    message["From"] = f"Alice <{SENDER}>"
    message["To"] = AGENT
    message["Subject"] = subject
    message["Message-ID"] = f"<{time.monotonic_ns()}@example.net>"
    message.set_content("Shall we meet at noon?")
    with smtplib.SMTP(host, 25, timeout=30) as smtp:
        smtp.send_message(message)


def https_certificate(host: str) -> bytes:
    """The DER certificate ``host``:443 presents for HOSTNAME (read, not verified: Caddy's internal CA)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def starttls_certificate(host: str) -> bytes | None:
    """The DER certificate SMTP on ``host``:25 presents after STARTTLS; None when it offers no STARTTLS."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(host, 25, timeout=30) as smtp:
        smtp.ehlo("test.example.net")
        if not smtp.has_extn("starttls"):
            return None
        smtp.starttls(context=context)
        assert isinstance(smtp.sock, ssl.SSLSocket)
        return smtp.sock.getpeercert(binary_form=True)


def connects(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host``:``port`` is accepted within 3 s."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


# Pure parts ------------------------------------------------------------------------------------


def test_play_recap_reads_the_hosts_counts() -> None:
    output = ("PLAY RECAP ****\n"
              "vps  : ok=31   changed=0    unreachable=0    failed=0    skipped=4    rescued=0    ignored=1\n")
    assert play_recap(output, "vps") == Recap(ok=31, changed=0, unreachable=0, failed=0, skipped=4, ignored=1)
    assert play_recap("PLAY [x] ***\n", "vps") is None


def test_firewall_openings_are_those_of_the_dropping_input_chain() -> None:
    def rule(chain: str, *expr: dict[str, Any], table: str = "filter", family: str = "inet") -> dict[str, Any]:
        return {"rule": {"family": family, "table": table, "chain": chain, "expr": list(expr)}}

    def dport(right: Any, protocol: str = "tcp") -> dict[str, Any]:
        return {"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "dport"}}, "right": right}}

    ruleset = {"nftables": [
        {"chain": {"family": "inet", "table": "filter", "name": "input", "hook": "input", "policy": "drop"}},
        {"chain": {"family": "inet", "table": "filter", "name": "mail"}},
        {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "hook": "input", "policy": "accept"}},
        rule("input", {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established"]}},
             {"accept": None}),
        rule("input", dport(22), {"accept": None}),
        rule("input", dport({"set": [25, 465]}), {"jump": {"target": "mail"}}),
        rule("mail", dport({"set": [587, {"range": [993, 994]}]}), {"accept": None}),
        rule("input", dport(8080), {"drop": None}),
        rule("INPUT", {"accept": None}, family="ip"),
    ]}
    assert firewall_openings(json.dumps(ruleset)) == {
        Opening("tcp", 22), Opening("tcp", 587), Opening("tcp", 993), Opening("tcp", 994)}
    with pytest.raises(ValueError, match="no input chain with policy drop"):
        firewall_openings(json.dumps({"nftables": ruleset["nftables"][2:3]}))


def test_listening_ports_leave_out_loopback() -> None:
    ss = ("LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\nLISTEN 0 100 127.0.0.1:8025 0.0.0.0:*\n"
          "LISTEN 0 128 [::]:25 [::]:*\nLISTEN 0 5 [::1]:631 [::]:*\n")
    assert listening_ports(ss) == {22, 25}


# Lint ------------------------------------------------------------------------------------------

needs_site = pytest.mark.skipif(not SITE.exists(), reason="ansible/site.yml not written yet")


@needs_site
def test_site_playbook_passes_the_syntax_check() -> None:
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(EXAMPLE), str(SITE)],
        capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_site
@pytest.mark.timeout(300)
def test_ansible_lint_production_profile_is_clean() -> None:
    done = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--nocolor", str(ANSIBLE)],
        capture_output=True, text=True, env=ansible_env(), cwd=REPO, timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# The target on its own -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_target() -> Iterator[DeployTarget]:
    """A fresh target, for the tests that need no roles."""
    with DeployTarget() as target:
        yield target


@pytest.mark.timeout(600)
def test_smoke_playbook_installs_and_starts_a_service_on_the_target(bare_target: DeployTarget,
                                                                     tmp_path: Path) -> None:
    inventory = bare_target.inventory(tmp_path / "hosts.yml")
    first = run_playbook(SMOKE, inventory, timeout=500)
    assert first.returncode == 0 and first.recap is not None and first.recap.changed >= 3, first.explain()
    assert bare_target.ssh("systemctl is-active smoke").stdout.strip() == "active"
    assert bare_target.ssh("command -v tree").returncode == 0
    assert connects(bare_target.address, 8123)
    second = run_playbook(SMOKE, inventory, timeout=300)
    assert second.recap is not None and second.recap.changed == 0, second.explain()


@pytest.mark.timeout(600)
def test_target_runs_its_own_docker_engine_with_a_loaded_image(bare_target: DeployTarget) -> None:
    install = bare_target.ssh("sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
                              " --no-install-recommends docker.io", timeout=500)
    assert install.returncode == 0, install.stderr[-3000:]
    assert bare_target.ssh("sudo docker info -f '{{.Driver}}'").stdout.strip() == "overlay2"
    tag = standin_image()
    bare_target.load_image(tag)
    # A new stand-in is in bootstrap mode: HTTP only (SMTP once configured), here on port 8081.
    run = bare_target.ssh(f"sudo docker run -d --name standin --network host -e STANDIN_HTTP=0.0.0.0:8081 {tag}")
    assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 60
    while not connects(bare_target.address, 8081) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert httpx.get(f"http://{bare_target.address}:8081/healthz/live", timeout=10).status_code == 200


# site.yml on a fresh target --------------------------------------------------------------------


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """A target after two runs of site.yml, and the webhook receiver its agent posts to."""

    target: DeployTarget
    receiver: WebhookReceiver
    inventory: Path
    env: dict[str, str]
    engine: Engine
    first: PlaybookRun
    second: PlaybookRun


def write_inventory(target: DeployTarget, directory: Path, webhook_url: str, wheelhouse: Path) -> tuple[Path, Path]:
    """The example inventory's group_vars with the test's overrides as host vars (the stand-in image,
    the agent's webhook on the test side, TLS off: no ACME CA here), secrets in an ansible-vault file.
    Returns the inventory file and the vault password file."""
    inventory = directory / "inventory"
    shutil.copytree(EXAMPLE / "group_vars", inventory / "group_vars")
    example_vault = inventory / "group_vars" / "all" / "vault.yml.example"
    secrets: dict[str, Any] = yaml.safe_load(example_vault.read_text()) if example_vault.exists() else {}
    # Webhook secrets in Standard Webhooks' form (whsec_ + base64), the rest any long string.
    secrets = {name: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if "webhook" in name else f"test-{name}-0123456789"
               for name in secrets}
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text(yaml.safe_dump(secrets))
    password = directory / "vault-password"
    password.write_text("test vault password\n")
    password.chmod(0o600)
    subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password), str(vault)],
                   check=True, capture_output=True, env=ansible_env())
    example = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    group = next(iter(example["all"].get("children", {"appliance": None})))
    hosts = target.inventory(inventory / "hosts.yml", group=group, **site_overrides(webhook_url, wheelhouse))
    return hosts, password


def site_overrides(webhook_url: str, wheelhouse: Path) -> dict[str, Any]:
    """The host vars the test sets over the example inventory."""
    policy = f'defaultAction = "bounce"\n\n[[senders]]\nmatch = {{ domain = "{SENDER.split("@")[1]}" }}\n'
    return {
        "stalwart_image": standin_image(),
        "appliance_wheelhouse": str(wheelhouse),
        "hostname": HOSTNAME,
        # Caddy's own CA: no ACME CA is reachable here. The appliance looks for a new certificate every 3 s.
        "tls_enabled": True,
        "tls_issuer": "internal",
        "appliance_tls_check_interval": 3,
        "swap_enabled": False,
        "appliance_agents": [{"address": AGENT, "webhook_url": webhook_url, "policy": policy}],
    }


class Engine(msgspec.Struct, frozen=True, kw_only=True):
    """The target's Docker Engine made by the `docker` role alone, the stand-in image then loaded."""

    run: PlaybookRun
    load_seconds: float


def prepare_engine(target: DeployTarget, inventory: Path, env: dict[str, str]) -> Engine:
    """Apply the `docker` role (engine.yml) and load the stand-in into the engine it installs."""
    run = run_playbook(ENGINE, inventory, env=env)
    assert run.returncode == 0, run.explain()
    started = time.monotonic()
    target.load_image(standin_image())
    return Engine(run=run, load_seconds=time.monotonic() - started)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's wheel and its dependencies' (what `make deploy` builds into dist/wheelhouse)."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(directory), str(REPO)],
                   check=True, timeout=600)
    return directory


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Iterator[Deployment]:
    """site.yml applied twice to a fresh target (its engine made by the `docker` role and the stand-in
    image loaded into it first)."""
    if not SITE.exists():
        pytest.skip("ansible/site.yml not written yet")
    directory = tmp_path_factory.mktemp("deploy")
    with DeployTarget() as target, WebhookReceiver(host=target.gateway) as receiver:
        inventory, password = write_inventory(target, directory, receiver.url, wheelhouse)
        env = ansible_env(password)
        engine = prepare_engine(target, inventory, env)
        first = run_playbook(SITE, inventory, env=env)
        second = run_playbook(SITE, inventory, env=env) if first.returncode == 0 else first
        yield Deployment(target=target, receiver=receiver, inventory=inventory, env=env, engine=engine,
                         first=first, second=second)


@pytest.mark.timeout(1800)
def test_first_run_succeeds(deployment: Deployment) -> None:
    recap = deployment.first.recap
    assert deployment.first.returncode == 0 and recap is not None, deployment.first.explain()
    assert recap.failed == 0 and recap.unreachable == 0, deployment.first.explain()


def test_second_run_changes_nothing(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        engine = deployment.engine
        print(f"\n[deploy figures] docker role alone {engine.run.seconds:.1f} s, stand-in image loaded"
              f" {engine.load_seconds:.1f} s; site.yml first run {deployment.first.seconds:.1f} s"
              f" ({deployment.first.recap}), second run {deployment.second.seconds:.1f} s, changed on the"
              f" second run: {deployment.second.recap.changed if deployment.second.recap else '?'}")
    recap = deployment.second.recap
    assert deployment.second.returncode == 0 and recap is not None, deployment.second.explain()
    changed = [line for line in deployment.second.output.splitlines() if line.startswith("changed:")]
    assert recap.changed == 0, f"changed on the second run: {changed}\n{deployment.second.explain()}"


def test_appliance_unit_is_active(deployment: Deployment) -> None:
    state = deployment.target.ssh("systemctl is-active appliance")
    assert state.stdout.strip() == "active", deployment.target.ssh("sudo journalctl -u appliance -n 40").stdout


def test_mail_ports_listen(deployment: Deployment) -> None:
    listening = listening_ports(deployment.target.ssh("ss -ltnH").stdout)
    assert {22, 25} <= listening, listening
    assert connects(deployment.target.address, 25)


def test_firewall_opens_exactly_the_mail_ports(deployment: Deployment) -> None:
    ruleset = deployment.target.ssh("sudo nft -j list ruleset")
    assert ruleset.returncode == 0, ruleset.stderr
    assert firewall_openings(ruleset.stdout) == {Opening("tcp", port) for port in MAIL_PORTS}


def test_firewall_refuses_ports_that_listen_but_are_not_opened(deployment: Deployment) -> None:
    listening = listening_ports(deployment.target.ssh("ss -ltnH").stdout)
    closed = sorted(listening - MAIL_PORTS)
    assert closed, f"nothing listens beyond the mail ports ({sorted(listening)}): nothing to try"
    reached = [port for port in closed if connects(deployment.target.address, port)]
    assert not reached, f"listening on {closed}, reachable from outside: {reached}"


def test_message_to_port_25_reaches_the_webhook(deployment: Deployment) -> None:
    before = len(deployment.receiver.requests)
    send_mail(deployment.target.address, "Lunch on Friday?")
    deadline = time.monotonic() + 60
    while len(deployment.receiver.requests) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(deployment.receiver.requests) > before, deployment.target.ssh(
        "sudo journalctl -u appliance -n 60 --no-pager").stdout
    body = json.loads(deployment.receiver.requests[before].body)
    assert "Lunch on Friday?" in json.dumps(body)


def test_smtp_presents_the_certificate_https_uses(deployment: Deployment) -> None:
    address = deployment.target.address
    served = https_certificate(address)
    deadline = time.monotonic() + 90  # the copy runs at deploy; the appliance looks every 3 s
    presented = starttls_certificate(address)
    while presented != served and time.monotonic() < deadline:
        time.sleep(1)
        presented = starttls_certificate(address)
    assert presented == served, deployment.target.ssh(
        "sudo ls -l /var/lib/appliance-tls; sudo journalctl -u appliance -n 40 --no-pager").stdout


@pytest.mark.timeout(1800)
def test_run_interrupted_half_way_converges_when_run_again(tmp_path: Path, wheelhouse: Path) -> None:
    if not SITE.exists():
        pytest.skip("ansible/site.yml not written yet")
    with DeployTarget() as target, WebhookReceiver(host=target.gateway) as receiver:
        inventory, password = write_inventory(target, tmp_path, receiver.url, wheelhouse)
        env = ansible_env(password)
        prepare_engine(target, inventory, env)
        # Killed once the appliance role has begun (base and docker done, the appliance half-installed).
        run_until(SITE, inventory, env, at=lambda seen: sum("TASK [appliance : " in line for line in seen) >= 3)
        again = run_playbook(SITE, inventory, env=env)
        assert again.returncode == 0 and again.recap is not None and again.recap.failed == 0, again.explain()
        assert target.ssh("systemctl is-active appliance").stdout.strip() == "active"
        assert connects(target.address, 25)
        third = run_playbook(SITE, inventory, env=env)
        assert third.recap is not None and third.recap.changed == 0, third.explain()

        # An upgrade killed after the new configuration is written, before its handler restarts the
        # appliance: the next run (same change, so nothing left to write or notify) still restarts it.
        change = ("-e", "appliance_tls_check_interval=4")
        run_until(SITE, inventory, env, *change,
                  at=lambda seen: seen[-1].startswith("TASK [appliance : Look for the pinned Stalwart image"))
        config = "/etc/appliance/appliance.toml"
        assert "tls_check_interval = 4" in target.ssh(f"sudo cat {config}").stdout
        assert started_at(target) < written_at(target, config)  # the old process still runs
        fourth = run_playbook(SITE, inventory, *change, env=env)
        assert fourth.returncode == 0 and fourth.recap is not None and fourth.recap.changed >= 1, fourth.explain()
        assert started_at(target) >= written_at(target, config), fourth.explain()


def run_until(playbook: Path, inventory: Path, env: dict[str, str], *extra: str,
              at: Callable[[list[str]], bool]) -> None:
    """ansible-playbook killed (SIGKILL, its whole process group) once ``at`` holds of its output so far."""
    with subprocess.Popen([str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as running:
        assert running.stdout is not None
        seen = []
        for line in running.stdout:
            seen.append(line)
            if at(seen):
                os.killpg(running.pid, signal.SIGKILL)
                break
        running.wait(timeout=60)
    assert running.returncode == -signal.SIGKILL, "".join(seen[-40:])


def started_at(target: DeployTarget) -> int:
    """When the appliance's unit last became active, in Unix seconds."""
    shown = target.ssh("systemctl show appliance --property=ActiveEnterTimestamp --timestamp=unix --value")
    return int(shown.stdout.strip().lstrip("@"))


def written_at(target: DeployTarget, path: str) -> int:
    return int(target.ssh(f"sudo stat -c %Y {path}").stdout.strip())
