"""The scheduling agent end to end, offline, every part a real process or server on 127.0.0.1.

    boss (smtplib, DKIM-signed by acme.com) ──SMTP──> appliance (sandbox mode, subprocess)
        gate: DKIM and SPF against a loopback DNS server ──> webhook ──> the agent (subprocess,
        examples/scheduling_agent) ──SDK──> tools ──> the calendar service (subprocess)
        agent ──SDK reply──> outbound: threaded, DKIM-signed (keys from `appliance dkim keygen`)
        ──smarthost──> the boss's mail server (aiosmtpd on loopback), where the test reads it

The boss asks for a meeting, gets a proposal in the same thread, says yes, and the
meeting is booked and confirmed by reply. The calendar bot's notice reaches the agent
with ``read_calendar`` only: with its token, ``propose_meeting`` and ``confirm_meeting``
are 403 and the calendar service never hears of them.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from aiosmtpd.controller import Controller

from appliance.sdk import CapabilityMissing, Client, MessageReceived, StreamEvent
from examples.scheduling_agent.planner import asked_day
from tests.dnsserver import DnsTestServer
from tests.e2e.harness import ApplianceProcess, free_port
from tests.mailauth.conftest import DkimKey, _rsa_key

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scheduling_agent"
AGENT = "agent@example.test"
BOSS = "boss@acme.com"
BOT = "notices@calendar-bot.internal"
SECRET = "whsec_c2NoZWR1bGluZy1hZ2VudC1lMmUtc2VjcmV0LTMyYnl0ZXMh"
API_KEY = "agent-test-key"  # ApplianceProcess's AGENT_API_KEY


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class MailServer:
    """The boss's side: an SMTP server on loopback taking whatever the appliance relays."""

    got: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.got.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 Ok: queued"

    def wait_for(self, count: int, timeout: float, what: str, log: Callable[[], str]) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: the boss's server got {len(self.got)} message(s) in {timeout} s\n"
                                     f"{log()}")
            time.sleep(0.05)
        return self.got[:count]


@dataclass
class World:
    appliance: ApplianceProcess
    dns: DnsTestServer
    server: MailServer
    calendar_url: str
    agent_log: Path
    keys: dict[str, str]
    """The records `appliance dkim keygen` printed: name -> TXT value."""
    boss_key: DkimKey
    bot_key: DkimKey
    thursday: date

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.appliance.http_port}"

    def logs(self) -> str:
        try:
            with Client(self.url, API_KEY, retries=0) as client:
                outbox = "\n".join(f"{s.email_id} {s.status} " + " ".join(
                    f"{r.address}={r.status}({r.last_detail})" for r in s.recipients) for s in client.outbox())
        except Exception as exc:
            outbox = f"(unreadable: {exc})"
        return (f"--- agent ---\n{self.agent_log.read_text()[-3000:]}\n--- outbox ---\n{outbox}\n"
                f"--- appliance ---\n{self.appliance.log.read_text()[-4000:]}")

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = httpx.get(f"{self.calendar_url}/calls", timeout=5).json()["calls"]
        return calls

    def send(self, raw: bytes, sender: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.appliance.smtp_port, timeout=30) as smtp:
            refused = smtp.sendmail(sender, [AGENT], raw)
        assert refused == {}

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.agent_log.read_text():
            assert time.monotonic() < deadline, f"the agent never logged {text!r}\n{self.logs()}"
            time.sleep(0.05)


def mail(sender: str, subject: str, body: str, *, key: DkimKey, domain: str, selector: str,
         in_reply_to: str | None = None, references: list[str] | None = None) -> tuple[bytes, str]:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = AGENT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id = make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = " ".join(references or [in_reply_to])
    msg.set_content(body)
    raw = msg.as_bytes(policy=email.policy.SMTP)
    headers = [b"from", b"to", b"subject", b"date", b"message-id"]
    if in_reply_to:
        headers += [b"in-reply-to", b"references"]
    return key.sign(raw, domain=domain, selector=selector, headers=headers), message_id


def keygen(config: Path, domain: str) -> dict[str, str]:
    """Run `appliance dkim keygen` and read back the TXT records it prints."""
    done = subprocess.run([sys.executable, "-m", "appliance", "dkim", "keygen", "--config", str(config),
                           "--domain", domain], capture_output=True, text=True, timeout=60, cwd=config.parent)
    assert done.returncode == 0, done.stderr
    records = {}
    for line in done.stdout.splitlines():
        found = re.fullmatch(r"(\S+)\. IN TXT (.+)", line.strip())
        if found:
            records[found[1].lower()] = "".join(re.findall(r'"([^"]*)"', found[2]))
    assert len(records) == 2, done.stdout  # <selector>-rsa and <selector>-ed25519
    return records


def verify_dkim(raw: bytes, records: dict[str, str]) -> list[bytes]:
    """Every DKIM-Signature of ``raw`` checked by dkimpy against ``records``; the signing domains."""
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), "").encode()

    count = len(re.findall(rb"^DKIM-Signature:", raw, re.IGNORECASE | re.MULTILINE))
    assert count >= 1, "the reply is not DKIM-signed"
    domains = []
    for index in range(count):
        checker = dkim.DKIM(raw)
        assert checker.verify(idx=index, dnsfunc=lookup), f"DKIM signature {index} does not verify"
        domains.append(checker.domain)
    return domains


def ids(header: str | None) -> list[str]:
    return re.findall(r"<[^>]+>", header or "")


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def listening(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"nothing listens at {url}"
            time.sleep(0.05)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    today = datetime.now(UTC).date()
    thursday = asked_day("Thursday", today)
    boss_key, bot_key = _rsa_key(2048), _rsa_key(2048)
    processes: list[subprocess.Popen[bytes]] = []
    with DnsTestServer([
        boss_key.txt("boss", "acme.com"),
        ("acme.com", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
        ("_dmarc.acme.com", "TXT", "v=DMARC1; p=reject"),
        bot_key.txt("bot", "calendar-bot.internal"),
    ]) as dns:
        server = MailServer()
        peer = Controller(server, hostname="127.0.0.1", port=free_port())
        peer.start()
        try:
            # The calendar: Thursday's first hour is taken.
            bookings = tmp_path / "bookings.json"
            bookings.write_text(json.dumps([{"start": f"{thursday}T09:00:00Z", "end": f"{thursday}T10:00:00Z",
                                             "title": "Leadership sync"}]))
            calendar_port, agent_port = free_port(), free_port()
            env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}  # the offline planner
            processes.append(start([sys.executable, "-m", "examples.scheduling_agent.calendar_service",
                                    str(calendar_port), "--bookings", str(bookings)], tmp_path / "calendar.log", env))
            calendar_url = f"http://127.0.0.1:{calendar_port}"
            tools = "".join(f'[[tools]]\nname = "{name}"\nurl = "{calendar_url}/{path}"\ncapability = "{cap}"\n'
                            for name, path, cap in (("calendar_availability", "availability", "read_calendar"),
                                                    ("propose_meeting", "propose", "propose_meeting"),
                                                    ("confirm_meeting", "confirm", "confirm_meeting")))
            config = tmp_path / "appliance.toml"
            config.write_text(f"""
mode = "sandbox"
hostname = "mx.example.test"
data_dir = "var"
[http]
listen = "127.0.0.1:{free_port()}"
[smtp]
listen = "127.0.0.1:{free_port()}"
[dns]
nameservers = ["{dns.address}"]
timeout = 1.0
[outbound]
transport = "smarthost"
smarthost = "127.0.0.1:{peer.port}"
require_tls = false
{tools}
[[agents]]
address = "{AGENT}"
policy = "{EXAMPLE / 'policy.toml'}"
webhook_url = "http://127.0.0.1:{agent_port}/hook"
webhook_secret_env = "AGENT_WEBHOOK_SECRET"
api_key_env = "AGENT_API_KEY"
""")
            keys = keygen(config, "example.test")
            for name, value in keys.items():
                dns.add((name, "TXT", value))
            appliance = ApplianceProcess(config, env={"AGENT_WEBHOOK_SECRET": SECRET})
            with appliance:
                agent_log = tmp_path / "agent.log"
                processes.append(start([sys.executable, "-m", "examples.scheduling_agent.agent", str(agent_port)],
                                       agent_log, {**env, "AGENT_WEBHOOK_SECRET": SECRET, "AGENT_API_KEY": API_KEY,
                                                   "APPLIANCE_URL": f"http://127.0.0.1:{appliance.http_port}"}))
                listening(f"{calendar_url}/bookings")
                listening(f"http://127.0.0.1:{agent_port}/hook")
                yield World(appliance=appliance, dns=dns, server=server, calendar_url=calendar_url,
                            agent_log=agent_log, keys=keys, boss_key=boss_key, bot_key=bot_key, thursday=thursday)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            peer.stop()


def stream(world: World, count: int, timeout: float = 30.0) -> list[StreamEvent]:
    """The first ``count`` message.received events, read from the event stream as any agent could."""
    out: list[StreamEvent] = []

    def read() -> None:
        with Client(world.url, API_KEY) as client:
            for item in client.events(backoff=0.05, read_timeout=20):
                if isinstance(item.event, MessageReceived):
                    out.append(item)
                    if len(out) == count:
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(out) == count, f"{len(out)} of {count} message.received events\n{world.logs()}"
    return out


def test_the_boss_books_a_meeting_by_mail_and_the_conflict_bot_cannot(world: World) -> None:
    day = f"{world.thursday:%A %d %B}"

    # 1. The boss asks. DKIM (acme.com) and SPF (127.0.0.1) pass at the gate; the webhook reaches the agent.
    asked, asked_id = mail(BOSS, "Q4 planning", "Hi, can we meet on Thursday for 30 minutes to go over the Q4 plan?",
                           key=world.boss_key, domain="acme.com", selector="boss")
    world.send(asked, BOSS)
    world.wait_log(f"[agent] mail from {BOSS} ('Q4 planning')")
    (proposal,) = world.server.wait_for(1, 60, "the proposal", world.logs)

    # 2. The proposal: to the boss, from the agent, in the thread, signed with the key keygen made.
    assert (proposal.mail_from, proposal.rcpt_tos) == (AGENT, [BOSS])
    reply = proposal.message
    assert reply["From"].addresses[0].addr_spec == AGENT
    assert reply["Subject"] == "Re: Q4 planning"
    assert ids(reply["In-Reply-To"]) == [asked_id]
    assert ids(reply["References"]) == [asked_id]
    assert set(verify_dkim(proposal.data, world.keys)) == {b"example.test"}
    text = reply.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert text.startswith(f"How about {day}, 10:00-10:30 UTC for 'Q4 planning'?"), text
    held = httpx.get(f"{world.calendar_url}/bookings", timeout=5).json()["holds"]
    assert [(h["start"], h["title"]) for h in held] == [(f"{world.thursday}T10:00:00Z", "Q4 planning")]
    thread = held[0]["thread"]

    # 3. The boss says yes, in the thread; the agent books the held slot and confirms by reply.
    proposal_id = reply["Message-ID"]
    yes, yes_id = mail(BOSS, "Re: Q4 planning", "Yes, that works. Please book it.\n\n> " + text.splitlines()[0],
                       key=world.boss_key, domain="acme.com", selector="boss", in_reply_to=proposal_id,
                       references=[asked_id, proposal_id])
    world.send(yes, BOSS)
    confirmation = world.server.wait_for(2, 60, "the confirmation", world.logs)[1]
    confirmed = confirmation.message
    assert ids(confirmed["In-Reply-To"]) == [yes_id]
    assert ids(confirmed["References"])[-1] == yes_id and asked_id in ids(confirmed["References"])
    assert set(verify_dkim(confirmation.data, world.keys)) == {b"example.test"}
    assert confirmed.get_body(("plain",)).get_content().startswith(  # type: ignore[union-attr]
        f"Booked: 'Q4 planning', {day}, 10:00-10:30 UTC.")
    listing = httpx.get(f"{world.calendar_url}/bookings", timeout=5).json()
    assert [(b["title"], b["start"], b["thread"]) for b in listing["bookings"]] == [
        ("Leadership sync", f"{world.thursday}T09:00:00Z", None),
        ("Q4 planning", f"{world.thursday}T10:00:00Z", thread)]
    assert listing["holds"] == []

    # 4. The calendar bot's notice: DKIM-signed, let through with read_calendar only.
    notice, _ = mail(BOT, "Conflict on Thursday", "Conflict: the board review on Thursday now overlaps the offsite. "
                     "Please move the Q4 planning meeting.", key=world.bot_key, domain="calendar-bot.internal",
                     selector="bot")
    world.send(notice, BOT)
    world.wait_log("nothing changed (granted: read_calendar)")
    events = stream(world, 3)
    assert [e.event.data.thread_id for e in events[:2] if isinstance(e.event, MessageReceived)] == [thread, thread]
    bot = events[2].event
    assert isinstance(bot, MessageReceived)
    assert (bot.data.sender, bot.data.capabilities, bot.data.auth.dkim) == (BOT, ["read_calendar"], "pass")
    before = world.calls()
    assert [c["path"] for c in before if c["thread"] == bot.data.thread_id] == ["/availability"]

    # 5. An agent talked into more than the grant: the appliance refuses, the calendar never hears of it.
    with Client(world.url, API_KEY) as client:
        slot = {"start": f"{world.thursday}T11:00:00Z", "end": f"{world.thursday}T11:30:00Z", "title": "Moved"}
        for tool in ("propose_meeting", "confirm_meeting"):
            with pytest.raises(CapabilityMissing) as refused:
                client.call_tool(tool, slot, capability_token=bot.data.capability_token)
            assert (refused.value.status, refused.value.reason) == (403, "capability_missing")
        assert client.call_tool("calendar_availability", {"from": str(world.thursday), "limit": 1},
                                capability_token=bot.data.capability_token)["slots"]
        sent = client.outbox()
        assert {s.thread_id for s in sent} == {thread} and len(sent) == 2
    after = world.calls()
    assert [c["path"] for c in after[len(before):]] == ["/availability"]
    assert not any(c["path"] in ("/propose", "/confirm") and c["thread"] == bot.data.thread_id for c in after)
    time.sleep(1.0)
    assert len(world.server.got) == 2  # the bot got no answer
