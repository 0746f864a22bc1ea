"""``appliance domains add|list|show|verify``, on the database file and through a running appliance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.zone
import pytest

from appliance.cli import main
from appliance.config import load_config
from appliance.store.database import Database
from tests.api.server import serve
from tests.conftest import AGENT, POLICY
from tests.delivery.receiver import free_port
from tests.dnsserver import DnsTestServer, Record
from tests.domains.conftest import ADDRESS, DOMAIN

TOKEN = "domains-admin-token"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_DOMAINS_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)


@pytest.fixture
def config_file(tmp_path: Path, dns_server: DnsTestServer) -> Iterator[Path]:
    (tmp_path / "policy.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    path.write_text(f"""
mode = "stalwart"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{free_port()}"
admin_token_env = "TEST_DOMAINS_ADMIN_TOKEN"
[dns]
nameservers = ["{dns_server.address}"]
timeout = 0.5
[domains]
public_address = "{ADDRESS}"
[[agents]]
address = "{AGENT}"
policy = "policy.toml"
""")
    yield path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def publish(server: DnsTestServer, manifest_json: str) -> None:
    manifest = json.loads(manifest_json)
    for r in manifest["records"]:
        server.add(Record(r["name"], r["type"], r["value"]))
    for p in manifest["ptr"]:
        server.add(Record(p["name"], "PTR", p["target"]))


def test_add_show_verify_on_the_file(config_file: Path, dns_server: DnsTestServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    Database(config_file.parent / "var" / "appliance.duckdb").close()  # an appliance ran here once
    cfg = ["--config", str(config_file)]
    code, out, _ = run(capsys, "domains", "add", "Example.Test", *cfg)
    assert code == 0 and "added example.test" in out and "appliance-rsa" in out
    assert (config_file.parent / "var" / "dkim" / DOMAIN / "appliance-rsa.pem").exists()
    code, _, err = run(capsys, "domains", "add", DOMAIN, *cfg)
    assert code == 1 and "added already" in err
    code, _, err = run(capsys, "domains", "add", "bad_name!", *cfg)
    assert code == 1 and "'bad_name!'" in err

    code, out, _ = run(capsys, "domains", "list", *cfg)
    assert code == 0 and out.startswith(f"{DOMAIN}\t")
    code, table, _ = run(capsys, "domains", "show", DOMAIN, *cfg)
    assert code == 0 and table.splitlines()[2].startswith("TYPE") and f"v=spf1 ip4:{ADDRESS} -all" in table
    code, bind, _ = run(capsys, "domains", "show", DOMAIN, "--format", "bind", *cfg)
    assert code == 0 and dns.zone.from_text(bind, origin=DOMAIN, check_origin=False).get_rdataset("@", "MX")

    code, out, _ = run(capsys, "domains", "verify", DOMAIN, *cfg)
    assert code == 1 and "missing  MX    example.test" in out and "records not ok" in out
    code, manifest_json, _ = run(capsys, "domains", "show", DOMAIN, "--format", "json", *cfg)
    publish(dns_server, manifest_json)
    code, out, _ = run(capsys, "domains", "verify", DOMAIN, "--json", *cfg)
    assert code == 0 and json.loads(out)["ok"] is True

    code, _, err = run(capsys, "domains", "show", "other.test", *cfg)
    assert code == 1 and "no domain other.test" in err


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command in a process of its own, as an operator runs it beside the appliance (which holds the file)."""
    return subprocess.run([sys.executable, "-m", "appliance", *argv], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TEST_DOMAINS_ADMIN_TOKEN": TOKEN})


def test_add_and_verify_through_a_running_appliance(config_file: Path, dns_server: DnsTestServer) -> None:
    cfg = ["--config", str(config_file)]
    config = load_config(config_file)
    with serve(config, port=int(config.http.listen.rpartition(":")[2])):
        added = cli("domains", "add", DOMAIN, *cfg)
        assert added.returncode == 0 and "added example.test" in added.stdout, added.stderr
        shown = cli("domains", "show", DOMAIN, "--format", "json", *cfg)
        assert shown.returncode == 0, shown.stderr
        publish(dns_server, shown.stdout)
        dns_server.fail(f"_dmarc.{DOMAIN}", how="servfail")
        verified = cli("domains", "verify", DOMAIN, *cfg)
        assert verified.returncode == 1 and f"unknown  TXT   _dmarc.{DOMAIN}" in verified.stdout
        dns_server.heal()
        verified = cli("domains", "verify", DOMAIN, *cfg)
        assert verified.returncode == 0 and "records ok" in verified.stdout, verified.stdout
