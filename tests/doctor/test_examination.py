"""A whole doctor's round: DNS over the real loopback DNS server (right, wrong and missing records), and the
test message, ports and DMARC summary against a running sandbox appliance; the CLI's exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.cli import doctor as doctor_cmd
from appliance.config import ApplianceConfig, load_config
from appliance.doctor import CHECKS
from appliance.doctor.examination import DoctorOptions, examine
from appliance.domains.service import dkim_keys, domain_manifest
from tests.api.server import Served, serve
from tests.conftest import AGENT, POLICY
from tests.dnsserver import DnsTestServer

ONLY_DNS = DoctorOptions(skip=frozenset(CHECKS) - {"dns"})


def publish(server: DnsTestServer, config: ApplianceConfig, *, leave_out: str = "", change: str = "",
            to: str = "") -> None:
    """Serve ``config``'s manifest for example.test, but without ``leave_out`` and with ``change`` set to ``to``."""
    manifest = asyncio.run(domain_manifest(config, dkim_keys(config), "example.test"))
    for record in manifest.records:
        key = f"{record.type} {record.name}"
        if key == leave_out:
            continue
        server.add((record.name, record.type, to if key == change else record.value))


def test_dns_right_wrong_and_missing_records_each_get_their_line(make_config: Callable[..., ApplianceConfig],
                                                                 dns_server: DnsTestServer) -> None:
    config = make_config()
    publish(dns_server, config, leave_out="TXT _dmarc.example.test", change="TXT example.test", to="v=spf1 -all")
    diagnosis = asyncio.run(examine(config, ONLY_DNS))
    states = {f.subject: f for f in diagnosis.findings}
    assert states["MX example.test"].state == "ok"
    assert states["TXT _dmarc.example.test"].state == "fail"
    assert states["TXT _dmarc.example.test"].found.startswith("missing")
    assert "_dmarc.example.test" in states["TXT _dmarc.example.test"].advice
    spf = states["TXT example.test"]
    assert spf.state == "fail" and spf.found == "wrong: v=spf1 -all" and spf.expected == "v=spf1 mx -all"
    assert not diagnosis.healthy


def test_dns_all_published_is_green(make_config: Callable[..., ApplianceConfig], dns_server: DnsTestServer) -> None:
    config = make_config()
    publish(dns_server, config)
    diagnosis = asyncio.run(examine(config, ONLY_DNS))
    assert diagnosis.healthy, [f for f in diagnosis.findings if f.state != "ok"]
    assert len(diagnosis.findings) == 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """mode = "sandbox"
hostname = "mx.example.test"
data_dir = "var"

[http]
listen = "127.0.0.1:{http}"
admin_token_env = "TEST_APPLIANCE_ADMIN_TOKEN"

[smtp]
listen = "127.0.0.1:{smtp}"

[dns]
nameservers = ["{dns}"]
timeout = 0.5

[[agents]]
address = "{agent}"
policy = "policy.toml"
"""


@pytest.fixture
def appliance(tmp_path: Path, dns_server: DnsTestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A running sandbox appliance (uvicorn in a thread) from a configuration file at tmp_path/appliance.toml."""
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    (tmp_path / "policy.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    http = free_port()
    path.write_text(CONFIG.format(http=http, smtp=free_port(), dns=dns_server.address, agent=AGENT))
    with serve(load_config(path), port=http) as served:
        yield served


def doctor_parser() -> argparse.ArgumentParser:
    """``appliance`` with the doctor group, as ``appliance.cli`` registers it."""
    parser = argparse.ArgumentParser(prog="appliance")
    doctor_cmd.register(parser.add_subparsers(dest="group", required=True))
    return parser


def run_cli(tmp_path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parsed = doctor_parser().parse_args(["doctor", "--config", str(tmp_path / "appliance.toml"), *args])
    code = parsed.handler(parsed)
    assert isinstance(code, int)
    return code, capsys.readouterr().out


def test_the_test_message_goes_through_the_running_appliance_and_its_decision_is_found(
        appliance: Served, tmp_path: Path) -> None:
    config = load_config(tmp_path / "appliance.toml")
    diagnosis = asyncio.run(examine(config, DoctorOptions(skip=frozenset({"dns", "dmarc"}))))
    by_check = {f.check: f for f in diagnosis.findings}
    message = by_check["message"]
    assert message.state == "ok", message
    assert message.found.startswith("decided bounce")  # the test policy bounces unknown senders
    ports = [f for f in diagnosis.findings if f.check == "ports"]
    assert len(ports) == 2 and all(f.state == "ok" for f in ports)
    assert diagnosis.healthy


def test_the_cli_exits_0_when_all_green(appliance: Served, tmp_path: Path, dns_server: DnsTestServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    publish(dns_server, load_config(tmp_path / "appliance.toml"))
    code, out = run_cli(tmp_path, capsys=capsys)
    assert code == 0, out
    assert out.splitlines()[-1].startswith("healthy: all")
    assert "dmarc" in out and "no aggregate report" in out


def test_the_cli_exits_1_with_the_failing_lines(appliance: Served, tmp_path: Path, dns_server: DnsTestServer,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    publish(dns_server, load_config(tmp_path / "appliance.toml"), leave_out="MX example.test")
    closed = free_port()
    code, out = run_cli(tmp_path, "--port", str(closed), "--skip", "message", capsys=capsys)
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any("MX example.test: missing" in line for line in failing)
    assert any(f"127.0.0.1:{closed}" in line for line in failing)
    assert "what to do:" in out and "skipped: message" in out


def test_the_cli_prints_json(appliance: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(tmp_path, "--json", "--skip", "dns", "--skip", "message", capsys=capsys)
    body = json.loads(out)
    assert code == 0 and body["healthy"] is True
    assert {f["check"] for f in body["findings"]} == {"ports", "dmarc"}
    assert body["skipped"] == ["dns", "message"]


def test_register_adds_the_doctor_command() -> None:
    args = doctor_parser().parse_args(
        ["doctor", "--config", "x.toml", "--port", "25", "--port", "2525", "--skip", "dmarc"])
    assert args.port == [25, 2525] and args.skip == ["dmarc"] and args.handler is doctor_cmd.run_doctor


async def test_ports_are_also_tried_on_the_public_address(make_config: Callable[..., ApplianceConfig]) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    smtp = listener.sockets[0].getsockname()[1]
    closed = free_port()
    try:
        config = make_config(mode="sandbox", smtp={"listen": f"127.0.0.1:{smtp}"},
                             http={"listen": f"127.0.0.1:{closed}"}, domains={"public_address": "127.0.0.1"})
        diagnosis = await examine(config, DoctorOptions(skip=frozenset(CHECKS) - {"ports"}))
    finally:
        listener.close()
        await listener.wait_closed()
    lines = [(f.subject.split()[0], f.found.split(" (")[0], f.state) for f in diagnosis.findings]
    assert lines == [(f"127.0.0.1:{smtp}", "listening", "ok"), (f"127.0.0.1:{closed}", "not listening", "fail"),
                     (f"127.0.0.1:{smtp}", "reachable from outside", "ok"),
                     (f"127.0.0.1:{closed}", "not reachable from outside", "fail")]
    assert "firewall" in diagnosis.findings[3].advice
