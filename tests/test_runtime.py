"""The running appliance's own jobs: policy reloads, limits across restarts, retention; its files and start-up."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.audit import record_event
from appliance.config import ApplianceConfig
from appliance.gate import Envelope
from appliance.runtime import Runtime
from appliance.store.database import Database, utc
from tests.conftest import AGENT, POLICY
from tests.delivery.receiver import free_port


def mail(sender: str, n: int = 0, *, extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: hello {n}\r\nMessage-ID: <rt-{n}@x.example>\r\n{extra}"
            f"\r\nbody {n}\r\n").encode()


def envelope(sender: str) -> Envelope:
    return Envelope(client_ip="192.0.2.10", helo="mx.example.net", mail_from=sender, rcpt_to=[AGENT])


async def test_changed_policy_is_reloaded_and_a_bad_one_is_refused_keeping_the_last_good(
        runtime: Runtime) -> None:
    path = runtime.config.path(runtime.config.agents[0].policy)
    assert (await runtime.reception.receive(envelope("a@stranger.example"), mail("a@stranger.example"),
                                            agent=AGENT, intake="smtp")).decision.action == "bounce"
    path.write_text('defaultAction = "accept"\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    await runtime.watch_policies()
    assert (await runtime.reception.receive(envelope("a@stranger.example"), mail("a@stranger.example", 1),
                                            agent=AGENT, intake="smtp")).decision.action == "accept"
    path.write_text('defaultAction = "maybe"\n')
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    await runtime.watch_policies()
    still = await runtime.reception.receive(envelope("a@stranger.example"), mail("a@stranger.example", 2),
                                            agent=AGENT, intake="smtp")
    assert still.decision.action == "accept"  # the last good policy stays
    events = await runtime.db.read(lambda con: con.execute(
        "SELECT type, detail FROM events WHERE agent = ? ORDER BY ts", [AGENT]).fetchall())
    assert [e[0] for e in events] == ["policy.reloaded", "policy.rejected"]
    assert "defaultAction: expected one of" in events[1][1]


async def test_rate_limit_windows_survive_a_restart(make_config: Callable[..., ApplianceConfig]) -> None:
    policy = 'defaultAction = "bounce"\n[[senders]]\nmatch = { domain = "example.net" }\nrateLimit = { perHour = 2 }\n'
    config = make_config(policies={AGENT: policy})
    for attempt in range(2):
        rt = Runtime(config)
        await rt.start()
        try:
            received = await rt.reception.receive(envelope("a@example.net"), mail("a@example.net", attempt),
                                                  agent=AGENT, intake="smtp")
            assert received.decision.action == "accept"
        finally:
            await rt.stop()
    rt = Runtime(config)
    await rt.start()
    try:
        third = await rt.reception.receive(envelope("a@example.net"), mail("a@example.net", 3), agent=AGENT,
                                           intake="smtp")
        assert (third.decision.action, third.decision.reason) == ("tempfail", "rate_limited")
    finally:
        await rt.stop()


async def test_thread_budget_survives_a_restart(make_config: Callable[..., ApplianceConfig]) -> None:
    policy = ('defaultAction = "bounce"\n[[senders]]\nmatch = { domain = "example.net" }\n'
              'tokenBudget = { perThread = 300 }\n')
    config = make_config(policies={AGENT: policy})
    body = "word " * 160  # about 200 tokens
    first = f"From: a@example.net\r\nSubject: plan\r\nMessage-ID: <root@example.net>\r\n\r\n{body}\r\n".encode()
    reply = (f"From: a@example.net\r\nSubject: Re: plan\r\nMessage-ID: <r1@example.net>\r\n"
             f"In-Reply-To: <root@example.net>\r\nReferences: <root@example.net>\r\n\r\n{body}\r\n").encode()
    rt = Runtime(config)
    await rt.start()
    try:
        assert (await rt.reception.receive(envelope("a@example.net"), first, agent=AGENT,
                                           intake="smtp")).decision.action == "accept"
    finally:
        await rt.stop()
    rt = Runtime(config)
    await rt.start()
    try:
        second = await rt.reception.receive(envelope("a@example.net"), reply, agent=AGENT, intake="smtp")
        assert (second.decision.action, second.decision.reason) == ("bounce", "token_budget_exhausted")
    finally:
        await rt.stop()


async def test_replies_join_their_thread_by_references_then_by_subject(runtime: Runtime) -> None:
    root = await runtime.reception.receive(envelope("a@example.net"), mail("a@example.net", 10), agent=AGENT,
                                           intake="smtp")
    by_ref = await runtime.reception.receive(
        envelope("a@example.net"),
        b"From: a@example.net\r\nSubject: other words\r\nMessage-ID: <x1@example.net>\r\n"
        b"References: <unknown@example.net> <rt-10@x.example>\r\n\r\nhi\r\n", agent=AGENT, intake="smtp")
    by_subject = await runtime.reception.receive(
        envelope("a@example.net"),
        b"From: a@example.net\r\nSubject: RE: Fwd:  Hello 10\r\nMessage-ID: <x2@example.net>\r\n\r\nhi\r\n",
        agent=AGENT, intake="smtp")
    unrelated = await runtime.reception.receive(
        envelope("a@example.net"),
        b"From: a@example.net\r\nSubject: hello 10\r\nMessage-ID: <x3@example.net>\r\n\r\nhi\r\n",
        agent=AGENT, intake="smtp")
    thread = root.decision.thread_id
    assert by_ref.decision.thread_id == thread
    assert by_subject.decision.thread_id == thread
    assert unrelated.decision.thread_id != thread  # no reply prefix: a new conversation


async def test_another_sender_naming_the_thread_gets_a_thread_of_its_own(runtime: Runtime) -> None:
    root = await runtime.reception.receive(envelope("a@example.net"), mail("a@example.net", 11), agent=AGENT,
                                           intake="smtp")
    by_ref = await runtime.reception.receive(
        envelope("b@example.net"),
        b"From: b@example.net\r\nSubject: other words\r\nMessage-ID: <y1@example.net>\r\n"
        b"References: <rt-11@x.example>\r\n\r\nhi\r\n", agent=AGENT, intake="smtp")
    copied_id = await runtime.reception.receive(  # a first message whose own id is the victim's
        envelope("c@example.net"),
        b"From: c@example.net\r\nSubject: Hello 11\r\nMessage-ID: <rt-11@x.example>\r\n\r\nhi\r\n",
        agent=AGENT, intake="smtp")
    by_subject = await runtime.reception.receive(
        envelope("d@example.net"),
        b"From: d@example.net\r\nSubject: Re: Hello 11\r\nMessage-ID: <y2@example.net>\r\n\r\nhi\r\n",
        agent=AGENT, intake="smtp")
    thread = root.decision.thread_id
    assert thread not in {by_ref.decision.thread_id, copied_id.decision.thread_id, by_subject.decision.thread_id}


async def test_every_decision_has_its_audit_row_with_message_id(runtime: Runtime) -> None:
    for n, sender in enumerate(["a@example.net", "x@stranger.example", "a@held.example", "a@dropped.example"]):
        await runtime.reception.receive(envelope(sender), mail(sender, 20 + n), agent=AGENT, intake="smtp")
    await runtime.reception.receive(envelope("a@example.net"), b"From: a@example.net, b@example.net\r\n"
                                    b"Message-ID: <bad@example.net>\r\n\r\nx\r\n", agent=AGENT, intake="smtp")
    rows = await runtime.db.read(lambda con: con.execute(
        "SELECT action, reason, message_id FROM decisions ORDER BY seq").fetchall())
    assert rows == [("accept", None, "<rt-20@x.example>"), ("bounce", "sender_not_allowed", "<rt-21@x.example>"),
                    ("quarantine", "quarantined_by_rule", "<rt-22@x.example>"),
                    ("drop", "dropped_by_rule", "<rt-23@x.example>"),
                    ("bounce", "malformed_message", "<bad@example.net>")]
    stored = await runtime.db.read(lambda con: con.execute(
        "SELECT mailbox, count(*) FROM messages GROUP BY mailbox ORDER BY mailbox").fetchall())
    assert stored == [("inbox", 1), ("quarantine", 1)]


async def test_stored_copy_carries_our_verdict_headers(runtime: Runtime) -> None:
    received = await runtime.reception.receive(envelope("a@example.net"), mail("a@example.net", 30), agent=AGENT,
                                               intake="smtp")
    raw = await runtime.db.read(lambda con: con.execute(
        "SELECT raw FROM messages WHERE email_id = ?", [received.email_id]).fetchone())
    assert raw is not None
    head = bytes(raw[0]).split(b"\r\n\r\n")[0]
    assert b"Authentication-Results: mx.example.test;" in head
    assert f"X-Appliance-Decision: {received.decision.decision_id}; action=accept".encode() in head


async def test_retention_removes_old_days_and_the_chain_still_verifies(runtime: Runtime) -> None:
    from appliance.audit import verify_chain

    for n in range(3):
        await runtime.reception.receive(envelope("a@example.net"), mail("a@example.net", 40 + n), agent=AGENT,
                                        intake="smtp")
    old = utc() - timedelta(days=120)
    await runtime.db.write(lambda con: con.execute(
        "UPDATE decisions SET ts = ? WHERE seq = (SELECT min(seq) FROM decisions)", [old]))
    # Rewriting ts broke that row's hash; retention removes the whole old day, checkpointing past it.
    await runtime.db.write(lambda con: con.execute(
        "UPDATE deliveries SET created_at = ?, status = 'delivered' WHERE seq = (SELECT min(seq) FROM deliveries)",
        [old]))
    await runtime.db.write(lambda con: con.execute(
        "UPDATE deliveries SET created_at = ?, status = 'dead' WHERE seq = (SELECT max(seq) FROM deliveries)",
        [old]))
    removed = await runtime.apply_retention()
    assert removed == 1
    report = await runtime.db.read(verify_chain)
    assert report.ok and report.rows == 2
    statuses = await runtime.db.read(lambda con: con.execute(
        "SELECT status FROM deliveries ORDER BY seq").fetchall())
    assert len(statuses) == 2 and statuses[-1] == ("dead",)  # the old delivered one went; the dead letter stays


async def test_admin_token_is_generated_once_into_the_data_dir(runtime: Runtime, tmp_path: Path) -> None:
    token_file = runtime.config.data_path / "admin.token"
    assert token_file.read_text().strip() == runtime.admin_token
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask 022", "umask 000"])
async def test_data_dir_is_private_whatever_the_umask(make_config: Callable[..., ApplianceConfig],
                                                      umask: int) -> None:
    # Both an existing, readable data_dir (made by the fixture) and one the appliance creates itself.
    for data_dir in ("var", "fresh/data"):
        old = os.umask(umask)
        try:
            rt = Runtime(make_config(data_dir=data_dir))
            await rt.start()
            try:
                await rt.db.write(lambda con: record_event(con, "test.one", AGENT, "first"))
                await rt.db.write(lambda con: con.execute("CHECKPOINT"))  # DuckDB deletes the WAL ...
                await rt.db.write(lambda con: record_event(con, "test.two", AGENT, "second"))  # ... and makes it anew
                data = rt.config.data_path
                assert (data / "appliance.duckdb.wal").exists()
                modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.rglob("*")}
            finally:
                await rt.stop()
        finally:
            os.umask(old)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700, data_dir
        assert {"appliance.duckdb", "appliance.duckdb.wal", "token.key", "admin.token"} <= set(modes)
        assert modes == dict.fromkeys(modes, 0o600), (data_dir, {k: oct(v) for k, v in modes.items()})
        assert stat.S_IMODE((data / "appliance.duckdb").stat().st_mode) == 0o600  # after the closing checkpoint


def _cli_config(tmp_path: Path) -> Path:
    (tmp_path / "policy.toml").write_text(POLICY)
    path = tmp_path / "appliance.toml"
    path.write_text(f"""
mode = "stalwart"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{free_port()}"
admin_token_env = "TEST_RUN_ADMIN_TOKEN"
[dns]
offline = true
[[agents]]
address = "{AGENT}"
policy = "policy.toml"
""")
    return path


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_RUN_ADMIN_TOKEN": "t", "STALWART_HOOK_SECRET": "s"}  # no start-up warnings
    return subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level",
                           "WARNING"], capture_output=True, text=True, timeout=60, env=env, check=False)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_start_up_on_a_damaged_database_is_one_clear_line(tmp_path: Path, damage: str) -> None:
    config = _cli_config(tmp_path)
    path = tmp_path / "var" / "appliance.duckdb"
    path.parent.mkdir()
    if damage == "garbage":
        path.write_bytes(os.urandom(100_000))
    else:
        db = Database(path)
        db.write_sync(lambda con: con.execute(
            "INSERT INTO events SELECT now()::TIMESTAMP, 'test', 'a@b', repeat('x', 200) FROM range(20000)"))
        db.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    done = _run(config)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert str(path) in line and "damaged" in line and "restore it from a backup" in line
    assert "another process" not in line and "already running" not in line
    assert path.read_bytes() == before  # the damaged file is left as it was, for the operator


def test_start_up_on_a_database_another_process_holds_says_so(tmp_path: Path) -> None:
    config = _cli_config(tmp_path)
    path = tmp_path / "var" / "appliance.duckdb"
    db = Database(path)  # this test process holds it, as a running appliance would
    try:
        done = _run(config)
    finally:
        db.close()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert str(path) in lines[0] and "in use by another process" in lines[0] and f"PID {os.getpid()}" in lines[0]
