"""Decision evidence: written with each decision, one commit per message, and removed by retention."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.audit import apply_retention
from appliance.config import ApplianceConfig, load_config
from appliance.errors import ConfigError
from appliance.gate import Envelope
from appliance.inbound.reception import Received, Reception
from appliance.mailauth.dns import resolver_for
from appliance.policy.book import PolicyBook
from appliance.runtime import Runtime
from appliance.store.database import Database, utc
from appliance.store.evidence import Evidence, evidence_for, refused_raws
from appliance.store.limits import PersistentLimits
from appliance.store.messages import get_message
from tests.conftest import AGENT, POLICY


def mail(sender: str, subject: str = "hello") -> bytes:
    return (f"From: {sender}\r\nTo: {AGENT}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\n"
            "Shall we meet?\r\n").encode()


async def receive(runtime: Runtime, raw: bytes, sender: str) -> Received:
    return await runtime.reception.receive(
        Envelope(client_ip="192.0.2.10", helo="mail.example.net", mail_from=sender, rcpt_to=[AGENT]), raw,
        agent=AGENT, intake="smtp")


async def test_the_evidence_commits_with_its_decision_one_commit_per_message(tmp_path: Path) -> None:
    # A Reception alone on its database: nothing else (no dispatcher) commits meanwhile.
    (tmp_path / "policy.toml").write_text(POLICY)
    db = Database(tmp_path / "appliance.duckdb")
    try:
        reception = Reception(db=db, policies=PolicyBook({AGENT: tmp_path / "policy.toml"}),
                              resolver=resolver_for([], 0.5, offline=True),
                              limits=await db.read(lambda con: PersistentLimits.load(con, 0.0)),
                              hostname="mx.example.test", max_message_size=1 << 20)
        envelope = Envelope(client_ip="192.0.2.10", helo="mail.example.net", mail_from="a@example.net",
                            rcpt_to=[AGENT])
        for n, sender in enumerate(("a@example.net", "z@stranger.example")):
            received = await reception.receive(envelope, mail(sender, f"m{n}"), agent=AGENT, intake="smtp")
            decision_id = received.decision.decision_id
            assert db.commits == n + 1
            assert decision_id in await db.read(functools.partial(evidence_for, decision_ids=[decision_id]))
    finally:
        db.close()


async def test_each_decision_records_its_facts_and_a_refused_one_its_bytes(runtime: Runtime) -> None:
    accepted = await receive(runtime, mail("a@example.net", "one"), "a@example.net")
    refused_mail = mail("z@stranger.example", "two")
    refused = await receive(runtime, refused_mail, "z@stranger.example")

    ids = [accepted.decision.decision_id, refused.decision.decision_id]
    found = await runtime.db.read(lambda con: evidence_for(con, ids))
    kept = await runtime.db.read(lambda con: refused_raws(con, ids))
    a, z = found[ids[0]], found[ids[1]]
    assert a.facts.envelope.mail_from == "a@example.net" and a.facts.thread_id == accepted.decision.thread_id
    assert a.facts.auth is not None and a.facts.auth.spf.domain == "example.net"  # verified then, in full
    assert a.facts.unreadable is None and a.facts.size == len(mail("a@example.net", "one"))
    assert z.email_id is None and kept == {ids[1]: refused_mail}  # only the refused message's bytes

    # the stored copy, past our trace fields, is the message as received
    assert a.email_id == accepted.email_id and a.stored_prefix
    stored = await runtime.db.read(lambda con: get_message(con, str(a.email_id)))
    assert stored is not None
    assert stored.raw[a.stored_prefix:] == mail("a@example.net", "one")
    assert stored.raw[:a.stored_prefix].startswith(b"Authentication-Results: ")


async def test_refused_raw_days_zero_keeps_no_refused_bytes_but_keeps_the_facts(
        make_config: Callable[..., ApplianceConfig]) -> None:
    runtime = Runtime(make_config(retention={"refused_raw_days": 0}))
    await runtime.start()
    try:
        refused = await receive(runtime, mail("z@stranger.example"), "z@stranger.example")
        decision_id = refused.decision.decision_id
        assert await runtime.db.read(lambda con: refused_raws(con, [decision_id])) == {}
        assert decision_id in await runtime.db.read(lambda con: evidence_for(con, [decision_id]))
    finally:
        await runtime.stop()


async def test_an_unreadable_message_keeps_its_reason_and_no_bytes(runtime: Runtime) -> None:
    raw = mail("a@example.net").replace(b"To:", b"From: b@example.net\r\nTo:")
    refused = await receive(runtime, raw, "a@example.net")
    decision_id = refused.decision.decision_id
    found = await runtime.db.read(lambda con: evidence_for(con, [decision_id]))
    unread = found[decision_id].facts.unreadable
    assert unread is not None and unread.reason == "malformed_message"
    assert found[decision_id].facts.auth is None
    assert await runtime.db.read(lambda con: refused_raws(con, [decision_id])) == {}


async def test_retention_removes_refused_bytes_after_their_days_and_facts_with_their_decisions(
        runtime: Runtime) -> None:
    refused = await receive(runtime, mail("z@stranger.example"), "z@stranger.example")
    decision_id = refused.decision.decision_id

    async def raws() -> dict[str, bytes]:
        return await runtime.db.read(lambda con: refused_raws(con, [decision_id]))

    async def facts() -> dict[str, Evidence]:
        return await runtime.db.read(lambda con: evidence_for(con, [decision_id]))

    now = utc()
    await runtime.db.write(lambda con: apply_retention(con, AGENT, 90, now + timedelta(days=6),
                                                       refused_raw_days=7))
    assert decision_id in await raws()
    await runtime.db.write(lambda con: apply_retention(con, AGENT, 90, now + timedelta(days=8),
                                                       refused_raw_days=7))
    assert await raws() == {}
    assert decision_id in await facts()  # the audit row stays, and its facts

    removed = await runtime.db.write(lambda con: apply_retention(con, AGENT, 1, now + timedelta(days=3)))
    assert removed == 1 and await facts() == {}


async def test_retention_with_zero_days_removes_every_refused_message_bytes(runtime: Runtime) -> None:
    refused = await receive(runtime, mail("z@stranger.example"), "z@stranger.example")
    decision_id = refused.decision.decision_id
    await runtime.db.write(lambda con: apply_retention(con, AGENT, 90, utc(), refused_raw_days=0))
    assert await runtime.db.read(lambda con: refused_raws(con, [decision_id])) == {}


@pytest.mark.parametrize("value", ["-1", '"seven"'])
def test_a_bad_refused_raw_days_is_refused_naming_the_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "appliance.toml"
    path.write_text(f"[retention]\nrefused_raw_days = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: retention.refused_raw_days: expected int")
