"""`make run` (examples/sandbox.py) as a person uses it: the printed commands work, and stopping it stops all.

Each test starts the real launcher on free ports with its own data directory,
from the repository root (where the printed ``.venv/bin/...`` paths point).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "examples" / "sandbox.py"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc: Linux")


class Sandbox:
    def __init__(self, tmp_path: Path) -> None:
        self.smtp_port, self.http_port, self.agent_port = free_port(), free_port(), free_port()
        self.data_dir = tmp_path / "sandbox"
        self.out = tmp_path / "sandbox.out"
        self.err = tmp_path / "sandbox.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, str(SANDBOX), "--smtp-port", str(self.smtp_port), "--http-port", str(self.http_port),
                "--agent-port", str(self.agent_port), "--data-dir", str(self.data_dir)]

    def start(self, timeout: float = 60.0) -> Sandbox:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=err, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"sandbox exited {self.proc.returncode}: {self.err.read_text()[-3000:]}"
            if self.healthy() and listening(self.agent_port):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"sandbox not up after {timeout} s:\n{self.err.read_text()[-3000:]}")

    def healthy(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def printed(self) -> str:
        return self.out.read_text()

    def children(self) -> list[int]:
        assert self.proc is not None
        return children_of(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        pids = box.children() if box.proc is not None and box.proc.poll() is None else []
        box.stop()
        for pid in pids:  # never leave one behind, whatever the test did
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def printed_command(text: str, starting: str) -> str:
    """The command printed on the line containing ``starting``, with its ``\\`` continuation lines, verbatim."""
    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if starting in line)
    command = [lines[index]]
    while command[-1].endswith("\\"):
        index += 1
        command.append(lines[index])
    return "\n".join(command).strip()


def bash(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_ADMIN_TOKEN"}  # only what the script exports
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def test_the_printed_first_mail_reaches_the_agent_with_its_subject(sandbox: Sandbox) -> None:
    sandbox.start()
    text = sandbox.printed()
    send = printed_command(text, "import smtplib")
    assert f"smtplib.SMTP('127.0.0.1', {sandbox.smtp_port})" in send
    sent = bash(send)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: "[agent] mail from" in sandbox.printed(), 20, "the demo agent prints the message")
    received = next(line for line in sandbox.printed().splitlines() if line.startswith("[agent] mail from"))
    assert received.startswith("[agent] mail from you@sandbox.localhost ('Lunch?'), thread T")

    # The "look at what happened" commands, as printed, in one shell (the export applies to the rest).
    look = "\n".join(printed_command(text, start) for start in (
        "export APPLIANCE_ADMIN_TOKEN", " audit sql ", " quarantine list ", " deliveries list "))
    done = bash("set -e\n" + look)
    assert done.returncode == 0, done.stderr
    assert re.search(r"you@sandbox\.localhost\s+.*accept", done.stdout), done.stdout
    assert "(0 held)" in done.stdout
    assert re.search(r"message\.received\s+delivered", done.stdout), done.stdout


def test_sigterm_stops_the_appliance_and_the_agent(sandbox: Sandbox) -> None:
    sandbox.start()
    children = sandbox.children()
    assert len(children) == 2
    assert sandbox.proc is not None
    sandbox.proc.send_signal(signal.SIGTERM)
    assert sandbox.proc.wait(40) == 0
    assert [pid for pid in children if alive(pid)] == []
    for port in (sandbox.smtp_port, sandbox.http_port, sandbox.agent_port):
        assert not listening(port)
    assert "Traceback" not in sandbox.err.read_text()


def test_children_die_with_a_killed_launcher(sandbox: Sandbox) -> None:
    sandbox.start()
    children = sandbox.children()
    assert len(children) == 2
    assert sandbox.proc is not None
    sandbox.proc.kill()  # SIGKILL: the launcher runs no code at all
    sandbox.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in children), 40, "the appliance and the agent exit")
    for port in (sandbox.smtp_port, sandbox.http_port, sandbox.agent_port):
        assert not listening(port)


def test_a_second_sandbox_on_the_same_ports_says_which_port_in_one_line(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.start()
    appliance = next(pid for pid in sandbox.children()
                     if "appliance" in Path(f"/proc/{pid}/cmdline").read_bytes().decode())
    second = subprocess.run([*sandbox.argv()[:-1], str(tmp_path / "second")], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert second.returncode == 1
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert re.fullmatch(rf"sandbox: SMTP port 127\.0\.0\.1:{sandbox.smtp_port} is in use "
                        rf"\(by pid {appliance} '[^']+'\); is another `make run` still up\?", lines[0]), lines[0]
    assert sandbox.healthy()  # the first one is untouched


def test_the_readme_shows_the_command_the_sandbox_prints() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sandbox_launcher", SANDBOX)
    assert spec is not None and spec.loader is not None
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    command = launcher.first_mail_command(".venv/bin/python", 2525)
    readme = (ROOT / "README.md").read_text()
    assert "\n".join("    " + line for line in command.splitlines()) in readme
