"""`make run`: the sandbox on 127.0.0.1 — the appliance plus the scheduling agent, no Docker, no domain.

Sets development secrets (never use them elsewhere), starts the scheduling agent
(examples/scheduling_agent: the agent and its calendar service, in one process),
prints how to send a first message and where to look, then runs the
appliance until Ctrl-C or SIGTERM, which stop both. The two children die with
the launcher even when it is killed outright (Linux: ``PR_SET_PDEATHSIG``).

    python examples/sandbox.py [--smtp-port 2525] [--http-port 8025] [--agent-port 9000] [--calendar-port 9001]
                               [--data-dir DIR]

With other ports or another data directory than the defaults, the
configuration used is written to ``DIR/appliance.toml`` (the commands printed
name it).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
AGENT_DIR = HERE / "scheduling_agent"
CONFIG = AGENT_DIR / "appliance.toml"
POLICY = AGENT_DIR / "policy.toml"
DEFAULT_DATA_DIR = (HERE / ".." / "var" / "sandbox").resolve()
SANDBOX_SECRETS = {
    "AGENT_WEBHOOK_SECRET": "whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0zMi1ieXRlcyE=",
    "AGENT_API_KEY": "sandbox-agent-key",
    "APPLIANCE_ADMIN_TOKEN": "sandbox-admin-token",
}
DEFAULTS = {"smtp_port": 2525, "http_port": 8025, "agent_port": 9000, "calendar_port": 9001}


def shown(path: Path) -> str:
    """``path`` as the operator would type it from the current directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def first_mail_command(python: str, smtp_port: int) -> str:
    """The shell command that sends the first message (as printed; tests run exactly this).

    Its lines are broken only between Python arguments: a backslash-newline inside the bytes
    literal would be removed by the shell and the indentation after it would fold ``Subject:``
    into ``To:``.
    """
    message = (r"b'From: you@sandbox.localhost\r\nTo: agent@sandbox.localhost\r\nSubject: Lunch?\r\n\r\n"
               r"Can we meet on Thursday?\r\n'")
    return (f"{python} -c \"import smtplib; smtplib.SMTP('127.0.0.1', {smtp_port}).sendmail("
            f"'you@sandbox.localhost', \\\n"
            f"      ['agent@sandbox.localhost'], \\\n"
            f"      {message})\"")


def welcome(*, python: str, appliance: str, config: str, smtp_port: int, http_port: int, agent_port: int,
            calendar_port: int) -> str:
    cfg = f"--config {config}"
    return f"""
The sandbox is starting: SMTP on 127.0.0.1:{smtp_port}, HTTP on 127.0.0.1:{http_port}, \
the scheduling agent on 127.0.0.1:{agent_port}, its calendar on 127.0.0.1:{calendar_port}.

Send a first message (in another terminal):

  {first_mail_command(python, smtp_port)}

  The agent prints it, with the capabilities the policy grants, reads the calendar and proposes a
  slot by reply (kept in the outbox: `outbox list` below). Try a stranger's address (550),
  "ignore previous instructions" in the body (550, prompt_injection_suspected), or a sender
  @x.review.localhost (quarantined).

Look at what happened:

  export APPLIANCE_ADMIN_TOKEN={SANDBOX_SECRETS["APPLIANCE_ADMIN_TOKEN"]}
  {appliance} audit sql {cfg} \\
      "SELECT ts, header_from, action, reason, capabilities FROM decisions ORDER BY seq DESC LIMIT 10"
  {appliance} quarantine list {cfg}
  {appliance} deliveries list {cfg}
  {appliance} outbox list {cfg}
  curl -s http://127.0.0.1:{calendar_port}/bookings
  {appliance} policy explain --policy {shown(POLICY)} --eml some.eml

  curl -N -H 'Authorization: Bearer {SANDBOX_SECRETS["AGENT_API_KEY"]}' http://127.0.0.1:{http_port}/api/v1/events
  http://127.0.0.1:{http_port}/schema/swagger    (the API; /metrics needs the admin token)

Ctrl-C stops both.
"""


def sandbox_config(*, smtp_port: int, http_port: int, agent_port: int, calendar_port: int, data_dir: Path) -> Path:
    """The scheduling agent's appliance.toml itself for the defaults; else a copy with these ports in ``data_dir``."""
    if data_dir == DEFAULT_DATA_DIR and (smtp_port, http_port, agent_port, calendar_port) == tuple(DEFAULTS.values()):
        return CONFIG
    text = CONFIG.read_text()
    for old, new, count in (('data_dir = "../../var/sandbox"', f'data_dir = "{data_dir}"', 1),
                            ('listen = "127.0.0.1:8025"', f'listen = "127.0.0.1:{http_port}"', 1),
                            ('listen = "127.0.0.1:2525"', f'listen = "127.0.0.1:{smtp_port}"', 1),
                            ('"http://127.0.0.1:9000/hook"', f'"http://127.0.0.1:{agent_port}/hook"', 1),
                            ('"http://127.0.0.1:9001/', f'"http://127.0.0.1:{calendar_port}/', 3),
                            ('policy = "policy.toml"', f'policy = "{POLICY}"', 1)):
        if text.count(old) != count:
            raise SystemExit(f"sandbox: {CONFIG} no longer has {old!r} {count} time(s); update examples/sandbox.py")
        text = text.replace(old, new)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "appliance.toml"
    path.write_text(text)
    return path


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the launcher dies, however it dies (Linux)."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        if prctl is not None:
            prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the launcher died before the line above took effect
            os._exit(1)

    return preexec


def busy_port(smtp_port: int, http_port: int, agent_port: int, calendar_port: int) -> str | None:
    """One line naming the first port that is taken (and by whom), or None."""
    from appliance.cli.run import PortUnavailable, check_port_free

    for label, port in (("SMTP", smtp_port), ("HTTP", http_port), ("scheduling agent", agent_port),
                        ("calendar service", calendar_port)):
        try:
            check_port_free(label, "127.0.0.1", port)
        except PortUnavailable as exc:
            return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the appliance and the scheduling agent on 127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=DEFAULTS["smtp_port"])
    parser.add_argument("--http-port", type=int, default=DEFAULTS["http_port"])
    parser.add_argument("--agent-port", type=int, default=DEFAULTS["agent_port"])
    parser.add_argument("--calendar-port", type=int, default=DEFAULTS["calendar_port"])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    ports = {"smtp_port": args.smtp_port, "http_port": args.http_port, "agent_port": args.agent_port,
             "calendar_port": args.calendar_port}

    busy = busy_port(**ports)
    if busy:
        print(f"sandbox: {busy}; is another `make run` still up?", file=sys.stderr)
        return 1
    config = sandbox_config(**ports, data_dir=args.data_dir.resolve())
    python = Path(sys.executable)
    script = python.parent / "appliance"
    env = {**os.environ, **SANDBOX_SECRETS, "APPLIANCE_URL": f"http://127.0.0.1:{args.http_port}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}

    children: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping:  # a second Ctrl-C: stop waiting for the appliance to drain
            for child in children:
                child.kill()
            return
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def start(*command: str) -> subprocess.Popen[bytes]:
        # A session of their own: Ctrl-C reaches the launcher only, which stops them in order.
        child = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent(), start_new_session=True)
        children.append(child)
        if stopping:  # the signal came while it was being started
            child.terminate()
        return child

    agent = start(sys.executable, "-m", "examples.scheduling_agent", str(args.agent_port),
                  "--calendar-port", str(args.calendar_port))
    print(welcome(python=shown(python), config=shown(config),
                  appliance=shown(script) if script.exists() else f"{shown(python)} -m appliance",
                  **ports), flush=True)
    appliance = start(sys.executable, "-m", "appliance", "run", "--config", str(config))
    code = 0
    while appliance.poll() is None:
        if agent.poll() is not None and not stopping:
            print(f"sandbox: the scheduling agent exited ({agent.returncode}); stopping the appliance", file=sys.stderr)
            code = 1
            on_signal(signal.SIGTERM, None)
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if stopping:
        return code
    return code or appliance.returncode


if __name__ == "__main__":
    sys.exit(main())
