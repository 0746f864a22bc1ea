"""`make run`: the sandbox on 127.0.0.1 — the appliance plus the demo agent, no Docker, no domain.

Sets development secrets (never use them elsewhere), starts the demo agent,
prints how to send a first message and where to look, then runs the
appliance in the foreground until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "appliance.toml"
SANDBOX_SECRETS = {
    "AGENT_WEBHOOK_SECRET": "whsec_c2FuZGJveC13ZWJob29rLXNlY3JldC0zMi1ieXRlcyE=",
    "AGENT_API_KEY": "sandbox-agent-key",
    "APPLIANCE_ADMIN_TOKEN": "sandbox-admin-token",
}

WELCOME = """
The sandbox is starting: SMTP on 127.0.0.1:2525, HTTP on 127.0.0.1:8025, the demo agent on 127.0.0.1:9000.

Send a first message (in another terminal):

  .venv/bin/python -c "import smtplib; smtplib.SMTP('127.0.0.1', 2525).sendmail('you@sandbox.localhost', \\
      ['agent@sandbox.localhost'], b'From: you@sandbox.localhost\\r\\nTo: agent@sandbox.localhost\\r\\n\\
  Subject: Lunch?\\r\\n\\r\\nCan we meet on Thursday?\\r\\n')"

  The demo agent prints it, with the capabilities the policy grants. Try a stranger's address (550),
  "ignore previous instructions" in the body (550, prompt_injection_suspected), or a sender
  @x.review.localhost (quarantined).

Look at what happened:

  export APPLIANCE_ADMIN_TOKEN=sandbox-admin-token
  .venv/bin/appliance audit sql --config examples/appliance.toml \\
      "SELECT ts, header_from, action, reason, capabilities FROM decisions ORDER BY seq DESC LIMIT 10"
  .venv/bin/appliance quarantine list --config examples/appliance.toml
  .venv/bin/appliance deliveries list --config examples/appliance.toml
  .venv/bin/appliance policy explain --policy examples/sandbox-policy.toml --eml some.eml

  curl -N -H 'Authorization: Bearer sandbox-agent-key' http://127.0.0.1:8025/api/v1/events   # event stream
  http://127.0.0.1:8025/schema/swagger                                                        # the API

Ctrl-C stops both.
"""


def main() -> int:
    env = {**os.environ, **SANDBOX_SECRETS}
    agent = subprocess.Popen([sys.executable, str(HERE / "demo_agent.py"), "9000"], env=env)
    print(WELCOME, flush=True)
    try:
        return subprocess.call([sys.executable, "-m", "appliance", "run", "--config", str(CONFIG)], env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        agent.terminate()
        agent.wait(5)


if __name__ == "__main__":
    sys.exit(main())
