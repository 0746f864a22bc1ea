"""`appliance policy replay`: the command line over a history made by a real appliance over real SMTP.

One appliance subprocess (sandbox mode) takes a small history over SMTP and is stopped; the command
then runs as a subprocess on its data directory, as an operator would run it.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import ApplianceProcess, write_config

AGENT = "agent@example.test"
OLD = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
"""
NEW = """
defaultAction = "bounce"
[[senders]]
match = { address = "a@example.net" }
[[senders]]
match = { domain = "friend.example" }
"""
"""b@example.net is no longer let in; friend.example now is."""


def mail(sender: str, n: int) -> bytes:
    return (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: message {n}\r\nMessage-ID: <m{n}@cli.test>\r\n\r\n"
            "Lunch on Thursday?\r\n").encode()


def send(port: int, sender: str, n: int) -> str:
    """Send one message; return the decision id of its reply (250 or 5xx)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail(sender, [AGENT], mail(sender, n))
        except smtplib.SMTPDataError as refused:
            return f"refused:{refused.smtp_code}"
        return "accepted"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The configuration of a stopped appliance whose history holds a@, b@example.net (accepted) and
    y@friend.example (bounced), in that order."""
    directory = tmp_path_factory.mktemp("replay")
    config = write_config(directory, policy=OLD)
    (directory / "new.toml").write_text(NEW)
    appliance = ApplianceProcess(config)
    with appliance:
        outcomes = [send(appliance.smtp_port, sender, n)
                    for n, sender in enumerate(("a@example.net", "b@example.net", "y@friend.example"))]
        assert outcomes == ["accepted", "accepted", "refused:550"]
        # while it runs, the same command goes through its admin API (the database is the appliance's)
        running = replay(config, "--since", "2000-01-01", "--json")
        assert running.returncode == 0, running.stderr
        (directory / "live-replay.json").write_text(running.stdout)
        assert appliance.terminate() == 0
    return config


def replay(config: Path, *args: str, policy: str = "new.toml", agent: str = AGENT) -> subprocess.CompletedProcess[str]:
    # the admin token the appliance ran with, as an operator's shell would have it
    env = {**os.environ, "APPLIANCE_ADMIN_TOKEN": "admin-test-token"}
    return subprocess.run([sys.executable, "-m", "appliance", "policy", "replay", "--config", str(config),
                           "--agent", agent, "--policy", str(config.parent / policy), *args],
                          capture_output=True, text=True, timeout=120, cwd=config.parent, env=env)


def test_json_lists_the_counts_and_the_flips_of_the_new_policy(history: Path) -> None:
    done = replay(history, "--since", "30d", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["agent"], report["decisions"], report["replayed"], report["unchanged"]) == (AGENT, 3, 3, 1)
    assert {(t["oldAction"], t["newAction"]): t["count"] for t in report["transitions"]} == {
        ("accept", "accept"): 1, ("accept", "bounce"): 1, ("bounce", "accept"): 1}
    flips = [(f["sender"], f["kind"], f["oldAction"], f["newAction"], f["newReason"], f["step"]["step"])
             for f in report["flips"]]
    assert flips == [("b@example.net", "now_refused", "accept", "bounce", "sender_not_allowed", "sender"),
                     ("y@friend.example", "now_accepted", "bounce", "accept", None, "decision")]
    assert report["notReplayable"] == []
    assert all(f["decisionId"].startswith("d") for f in report["flips"])


def test_a_running_appliance_replays_through_its_api_with_the_same_report(history: Path) -> None:
    stopped = replay(history, "--since", "2000-01-01", "--json")
    assert stopped.returncode == 0, stopped.stderr
    live = json.loads((history.parent / "live-replay.json").read_text())
    assert live == json.loads(stopped.stdout)
    assert live["flips"], "the new policy changes something: the comparison is not of two empty reports"


def test_the_table_shows_the_counts_and_each_flip_with_its_deciding_step(history: Path) -> None:
    done = replay(history)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "3 decision(s): 3 replayed, 1 unchanged, 2 changed, 0 not replayable" in out
    assert "accept       -> bounce            1" in out
    assert "accept -> bounce (sender_not_allowed)  [now refused]" in out
    assert "no rule matches b@example.net; defaultAction is bounce" in out
    assert "bounce (sender_not_allowed) -> accept  [now accepted]" in out


def test_a_since_after_the_history_replays_nothing(history: Path) -> None:
    done = replay(history, "--since", "2099-01-01", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["decisions"] == 0


@pytest.mark.parametrize(("args", "kwargs", "says"), [
    (("--since", "thirty days"), {}, "--since: expected a span like 30d"),
    ((), {"agent": "nobody@example.test"}, "--agent: 'nobody@example.test' is not an agent of"),
    ((), {"policy": "missing.toml"}, "missing.toml"),
])
def test_bad_input_is_one_line_and_exit_2(history: Path, args: tuple[str, ...], kwargs: dict[str, str],
                                          says: str) -> None:
    done = replay(history, *args, **kwargs)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and says in done.stderr and "Traceback" not in done.stderr


def test_a_policy_that_does_not_validate_is_named_with_its_field(history: Path) -> None:
    (history.parent / "bad.toml").write_text('defaultAction = "maybe"\n')
    done = replay(history, policy="bad.toml")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "bad.toml: defaultAction:" in done.stderr
