"""``appliance run`` start-up as an operator meets it: a taken port or a held database is one line, not a traceback;
unset secrets are warned about, one line each."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.cli.run import port_holders
from tests.e2e.harness import ApplianceProcess, free_port, write_config

POLICY = 'defaultAction = "bounce"\n'
HOLD_PORT = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("ready", flush=True); time.sleep(120)
"""
HOLD_DB = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1]); print("ready", flush=True); time.sleep(120)
"""


@contextmanager
def holder(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def run(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_ADMIN_TOKEN": "t", "AGENT_API_KEY": "k"}
    return subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(config)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=config.parent)


def plain_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def ports(config: Path) -> tuple[int, int]:
    import tomllib

    data = tomllib.loads(config.read_text())
    return int(data["smtp"]["listen"].rpartition(":")[2]), int(data["http"]["listen"].rpartition(":")[2])


@pytest.mark.parametrize("label", ["SMTP", "HTTP"])
def test_a_taken_port_is_one_line_naming_it_and_its_holder(tmp_path: Path, label: str) -> None:
    config = write_config(tmp_path, policy=POLICY)
    smtp, http = ports(config)
    port = smtp if label == "SMTP" else http
    with holder(HOLD_PORT, str(port)) as held:
        done = run(config)
    assert done.returncode == 1
    assert re.fullmatch(rf"appliance: {label} port 127\.0\.0\.1:{port} is in use \(by pid {held.pid} '[^']+'\)\n",
                        done.stderr), done.stderr
    assert not (tmp_path / "var" / "appliance.duckdb").exists()  # nothing was opened


def test_a_held_database_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, policy=POLICY)
    db = tmp_path / "var" / "appliance.duckdb"
    db.parent.mkdir()
    with holder(HOLD_DB, str(db)):
        done = run(config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Application startup failed" not in done.stderr
    lines = plain_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("appliance: cannot start: ") and str(db) in lines[0], lines[0]
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            assert json.loads(line)["level"] != "error", line


def test_port_holders_finds_a_listener_of_this_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert os.getpid() in [pid for pid, _ in port_holders(port)]
    assert port_holders(free_port()) == []


def test_unset_secrets_are_warned_about_one_line_each(tmp_path: Path) -> None:
    config = write_config(tmp_path, policy=POLICY, webhook_url="http://127.0.0.1:9/hook")
    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_WEBHOOK_SECRET",)}
    appliance = ApplianceProcess(config, env={"AGENT_API_KEY": ""})
    appliance.env = {k: v for k, v in {**env, **appliance.env}.items() if k != "AGENT_WEBHOOK_SECRET"}
    with appliance:
        assert appliance.terminate() == 0
    records = [json.loads(line) for line in appliance.log.read_text().splitlines() if line.startswith("{")]
    warnings = [r["msg"] for r in records if r["level"] == "warning"]
    assert warnings == [
        "agent agent@example.test: webhook secret $AGENT_WEBHOOK_SECRET is not set; "
        "its webhooks fail (and are retried) until it is",
        "agent agent@example.test: API key $AGENT_API_KEY is not set; "
        "its event stream, message and usage calls are refused (401)",
    ]


def test_config_check_prints_the_same_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, policy=POLICY, webhook_url="http://127.0.0.1:9/hook")
    monkeypatch.setenv("AGENT_WEBHOOK_SECRET", "whsec_not base64!")
    monkeypatch.delenv("AGENT_API_KEY", raising=False)
    assert main(["config", "check", str(config)]) == 0
    captured = capsys.readouterr()
    assert "ok (sandbox mode, 1 agent(s)" in captured.out
    err = captured.err.splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith("warning: agent agent@example.test: API key $AGENT_API_KEY is not set")
    assert err[1].startswith("warning: agent agent@example.test: $AGENT_WEBHOOK_SECRET: ")
    assert err[1].endswith("; its webhooks fail until it is fixed")


def test_a_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path, policy=POLICY)
    done = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "APPLIANCE_SMTP_MAX_MESSAGE_SIZE": "big"})
    assert done.returncode == 2
    assert done.stderr == ("environment variable APPLIANCE_SMTP_MAX_MESSAGE_SIZE: smtp.max_message_size: "
                           "expected int, got str\n")


def test_the_http_listener_is_a_tcp_socket_so_answers_are_not_held_by_nagle() -> None:
    import asyncio
    import socket

    from appliance.cli.run import bind_listener

    listener = bind_listener("HTTP", "127.0.0.1", 0)
    listener.listen()

    async def accepted_nodelay() -> int:
        flags: list[int] = []

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(100):
            if flags:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return flags[0]

    # asyncio sets TCP_NODELAY on accepted sockets only when the listener's proto names TCP
    assert asyncio.run(accepted_nodelay()) != 0
