"""``POST /hooks/mta`` end to end: Litestar app, a real Runtime on a temporary DuckDB, real DNS."""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dkim
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar.testing import AsyncTestClient

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.inbound.reception import Received
from appliance.outbound.model import OutboundMessage
from appliance.runtime import Runtime
from appliance.store.database import Batch, utc
from appliance.store.outbound import add_job, add_queued_message
from tests.conftest import AGENT, HOSTNAME, OTHER_AGENT
from tests.dnsserver import DnsTestServer
from tests.reports.samples import google, gzipped, report_message

FIXTURES = Path(__file__).parent / "fixtures"
SECRET_ENV = "TEST_APPLIANCE_HOOK_SECRET"
SECRET = "hook-secret-42"
BEARER = {"Authorization": f"Bearer {SECRET}"}


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def split_like_stalwart(raw: bytes) -> tuple[list[list[str]], str]:
    """``[[name, rawValue]]`` and the body, as Stalwart puts a message in a hook request."""
    headers, pos = [], 0
    while not raw.startswith(b"\r\n", pos):
        colon = raw.index(b":", pos)
        end = raw.index(b"\n", colon) + 1
        while raw[end : end + 1] in (b" ", b"\t"):
            end = raw.index(b"\n", end) + 1
        headers.append([raw[pos:colon].decode(), raw[colon + 1 : end].decode()])
        pos = end
    return headers, raw[pos + 2 :].decode()


def data_request(
    raw: bytes,
    *,
    mail_from: str = "alice@example.net",
    to: tuple[str, ...] = (AGENT,),
    sasl: str | None = None,
) -> dict[str, Any]:
    request = fixture("data")
    headers, contents = split_like_stalwart(raw)
    request["envelope"] = {"from": {"address": mail_from}, "to": [{"address": a} for a in to]}
    request["message"] = {"headers": headers, "contents": contents, "size": len(raw)}
    if sasl is not None:
        request["context"]["sasl"] = {"login": sasl}
    return request


def rcpt_request(*to: str, sasl: str | None = None) -> dict[str, Any]:
    request = fixture("rcpt")
    request["envelope"]["to"] = [{"address": a} for a in to]
    if sasl is not None:
        request["context"]["sasl"] = {"login": sasl}
    return request


def message(
    sender: str = "alice@example.net", *, extra: str = "", message_id: str = "<h1@example.net>"
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: {AGENT}\r\nSubject: Hello\r\n{extra}"
        f"Date: Mon, 6 Jan 2025 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n\r\nHi.\r\n"
    ).encode()


class Hook:
    """The app under test, its runtime, and a way to call the hook."""

    def __init__(self, client: AsyncTestClient[Any], runtime: Runtime) -> None:
        self.client, self.runtime = client, runtime

    async def call(
        self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            "/hooks/mta",
            content=content,
            headers={
                "Content-Type": "application/json",
                **(BEARER if headers is None else headers),
            },
        )

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.call(body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def decision(self, decision_id: str) -> tuple[Any, ...] | None:
        return await self.runtime.db.read(
            lambda con: con.execute(
                "SELECT d.action, d.intake, d.dkim, d.client_ip, d.helo, d.mail_from, m.mailbox, "
                "m.raw FROM decisions d LEFT JOIN messages m USING (decision_id) "
                "WHERE decision_id = ?",
                [decision_id],
            ).fetchone()
        )


@pytest.fixture
async def hook(
    make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hook]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    runtime = Runtime(make_config())
    async with AsyncTestClient(app=create_app(runtime.config, runtime)) as client:
        yield Hook(client, runtime)


def decision_id_of(answer: dict[str, Any]) -> str:
    [value] = [
        m["value"]
        for m in answer["modifications"]
        if m["type"] == "addHeader" and m["name"] == "X-Appliance-Decision"
    ]
    return str(value.partition(";")[0])


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {SECRET}x"},
        basic("stalwart", "wrong"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": f"Token {SECRET}"},
    ],
)
async def test_wrong_or_missing_secret_is_401(hook: Hook, headers: dict[str, str]) -> None:
    response = await hook.call(fixture("connect"), headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize("headers", [BEARER, basic("stalwart", SECRET), basic("", SECRET)])
async def test_bearer_and_basic_with_any_username_are_accepted(
    hook: Hook, headers: dict[str, str]
) -> None:
    response = await hook.call(fixture("connect"), headers)
    assert response.status_code == 200
    assert response.json() == {"action": "accept"}


async def test_unset_secret_fails_closed(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV)
    assert (await hook.call(fixture("connect"))).status_code == 401
    monkeypatch.setenv(SECRET_ENV, "")
    assert (await hook.call(fixture("connect"), {"Authorization": "Bearer "})).status_code == 401
    assert (await hook.call(fixture("connect"), basic("x", ""))).status_code == 401


# -- bad requests --------------------------------------------------------------------------------


async def test_malformed_json_is_400_with_the_reason(hook: Hook) -> None:
    response = await hook.call(b'{"context": {"stage": "connect"')
    assert response.status_code == 400
    assert response.json()["detail"] == "not an MTA hook request: Input data was truncated"


async def test_schema_error_is_400_naming_the_field(hook: Hook) -> None:
    request = fixture("rcpt")
    request["context"]["stage"] = "quit"
    response = await hook.call(request)
    assert response.status_code == 400
    assert "$.context.stage" in response.json()["detail"]
    del request["context"]["client"]
    assert (await hook.call(request)).status_code == 400


async def test_data_stage_without_message_is_400(hook: Hook) -> None:
    request = fixture("data")
    del request["message"]
    response = await hook.call(request)
    assert response.status_code == 400
    assert "message" in response.json()["detail"]


# -- stages before DATA --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["connect", "ehlo"])
async def test_early_stages_are_accepted_at_once(hook: Hook, name: str) -> None:
    assert await hook.answer(fixture(name)) == {"action": "accept"}


async def test_rcpt_of_an_agent_is_accepted(hook: Hook) -> None:
    assert await hook.answer(fixture("rcpt")) == {"action": "accept"}


async def test_rcpt_of_an_unknown_recipient_is_rejected_550_5_1_1(hook: Hook) -> None:
    answer = await hook.answer(rcpt_request(AGENT, "nobody@example.test"))
    assert answer["action"] == "reject"
    assert answer["response"]["status"] == 550
    assert answer["response"]["enhanced_status"] == "5.1.1"
    assert answer["response"]["message"] == "<nobody@example.test>: no such agent here"


async def test_rcpt_of_a_second_agent_is_deferred_452_4_5_3(hook: Hook) -> None:
    answer = await hook.answer(rcpt_request(AGENT, OTHER_AGENT))
    assert answer == {
        "action": "reject",
        "response": {
            "status": 452,
            "enhanced_status": "4.5.3",
            "enhancedStatus": "4.5.3",
            "message": "One agent per transaction, send again for this recipient",
        },
    }
    assert await hook.answer(rcpt_request(AGENT, AGENT)) == {"action": "accept"}


async def queue_approved(hook: Hook, raw: bytes, recipients: list[str], *, status: str = "queued") -> None:
    """What the outbox leaves after it approved a send: the queued message and its job."""

    def write(batch: Batch) -> None:
        add_queued_message(batch, OutboundMessage(
            email_id="o-approved", agent=AGENT, thread_id="t1", message_id="<h1@example.net>", mail_from=AGENT,
            recipients=recipients, subject="Hello", in_reply_to=None, raw=raw, body_sha256=""), queued_at=utc())
        add_job(batch, job_id="j1", email_id="o-approved", agent=AGENT, domain="elsewhere.example",
                recipients=recipients, status=status, attempts=0, queued_at=0.0, next_attempt_at=0.0)

    await hook.runtime.db.write_batch(write)


async def test_an_agents_submission_to_the_outside_passes_rcpt_and_is_decided_at_data(hook: Hook) -> None:
    assert await hook.answer(rcpt_request("friend@elsewhere.example", sasl=AGENT)) == {
        "action": "accept"
    }


async def test_an_agents_submission_the_outbox_never_approved_is_refused_and_audited(hook: Hook) -> None:
    answer = await hook.answer(
        data_request(message(AGENT), mail_from=AGENT, to=("friend@elsewhere.example",), sasl=AGENT)
    )
    assert answer["action"] == "reject"
    assert (answer["response"]["status"], answer["response"]["enhanced_status"]) == (550, "5.7.1")
    assert "not_from_outbox" in answer["response"]["message"]
    events = await hook.runtime.db.read(lambda con: con.execute(
        "SELECT type, agent FROM events WHERE type = 'outbound.refused'").fetchall())
    assert events == [("outbound.refused", AGENT)]


async def test_the_submission_the_outbox_approved_leaves(hook: Hook) -> None:
    raw = message(AGENT)
    await queue_approved(hook, raw, ["friend@elsewhere.example"])
    answer = await hook.answer(
        data_request(b"Received: from localhost\r\n" + raw, mail_from=AGENT, to=("friend@elsewhere.example",),
                     sasl=AGENT))
    assert answer == {"action": "accept"}


async def test_a_submission_to_a_recipient_the_outbox_did_not_approve_is_refused(hook: Hook) -> None:
    raw = message(AGENT)
    await queue_approved(hook, raw, ["friend@elsewhere.example"])
    answer = await hook.answer(data_request(
        raw, mail_from=AGENT, to=("friend@elsewhere.example", "stranger@elsewhere.example"), sasl=AGENT))
    assert answer["action"] == "reject"
    assert "recipient_not_allowed" in answer["response"]["message"]
    assert "stranger@elsewhere.example" in answer["response"]["message"]


async def test_a_submission_whose_body_or_header_changed_is_refused(hook: Hook) -> None:
    raw = message(AGENT)
    await queue_approved(hook, raw, ["friend@elsewhere.example"])
    changed_body = raw.replace(b"Hi.", b"Send me the keys.")
    changed_header = raw.replace(b"Subject: Hello", b"Subject: Urgent")
    for sent in (changed_body, changed_header, b"Reply-To: x@evil.example\r\n" + raw):
        answer = await hook.answer(
            data_request(sent, mail_from=AGENT, to=("friend@elsewhere.example",), sasl=AGENT))
        assert answer["action"] == "reject", sent
        assert "submission_changed" in answer["response"]["message"]


async def test_a_submission_of_a_message_already_sent_is_refused(hook: Hook) -> None:
    raw = message(AGENT)
    await queue_approved(hook, raw, ["friend@elsewhere.example"], status="sent")
    answer = await hook.answer(
        data_request(raw, mail_from=AGENT, to=("friend@elsewhere.example",), sasl=AGENT))
    assert answer["action"] == "reject"


# -- DATA ----------------------------------------------------------------------------------------


async def test_data_accept_adds_our_headers_and_stores_the_message(hook: Hook) -> None:
    request = fixture("data")
    answer = await hook.answer(request)
    assert answer["action"] == "accept"
    added = [(m["type"], m["name"]) for m in answer["modifications"]]
    assert added == [("addHeader", "Authentication-Results"), ("addHeader", "X-Appliance-Decision")]
    results, verdict = (m["value"] for m in answer["modifications"])
    assert results == f"{HOSTNAME}; spf=none; dkim=none; dmarc=none"
    assert "\r" not in results and "\n" not in results
    assert verdict.endswith("; action=accept")
    row = await hook.decision(decision_id_of(answer))
    assert row is not None
    action, intake, _, client_ip, helo, mail_from, mailbox, raw = row
    assert (action, intake, client_ip, helo, mail_from, mailbox) == (
        "accept",
        "hook",
        "192.0.2.10",
        "mail.signed.example",
        "alice@example.net",
        "inbox",
    )
    headers = "".join(f"{n}:{v}" for n, v in request["message"]["headers"])
    assert raw.endswith((headers + "\r\n" + request["message"]["contents"]).encode())


async def test_data_bounce_is_a_reject_with_status_enhanced_status_and_message(hook: Hook) -> None:
    answer = await hook.answer(
        data_request(message("eve@stranger.example"), mail_from="eve@stranger.example")
    )
    assert answer["action"] == "reject"
    assert answer["response"]["status"] == 550
    assert answer["response"]["enhanced_status"] == "5.7.1"
    assert answer["response"]["message"]
    assert "modifications" not in answer


async def test_data_tempfail_passes_a_451_through(hook: Hook, dns_server: DnsTestServer) -> None:
    dns_server.fail("strict.example", how="servfail")
    answer = await hook.answer(
        data_request(message("bob@strict.example"), mail_from="bob@strict.example")
    )
    assert answer["action"] == "reject"
    assert answer["response"]["status"] == 451
    assert answer["response"]["enhanced_status"].startswith("4.")


async def test_data_drop_is_a_discard(hook: Hook) -> None:
    answer = await hook.answer(
        data_request(message("news@dropped.example"), mail_from="news@dropped.example")
    )
    assert answer == {"action": "discard"}
    rows = await hook.runtime.db.read(
        lambda con: con.execute("SELECT action FROM decisions").fetchall()
    )
    assert rows == [("drop",)]


async def test_data_quarantine_is_accepted_but_held_by_the_appliance(hook: Hook) -> None:
    answer = await hook.answer(
        data_request(message("ann@held.example"), mail_from="ann@held.example")
    )
    assert answer["action"] == "accept"
    assert "; action=quarantine" in answer["modifications"][-1]["value"]
    row = await hook.decision(decision_id_of(answer))
    assert row is not None and (row[0], row[6]) == ("quarantine", "quarantine")


async def test_forged_trace_headers_are_deleted_before_ours_are_added(hook: Hook) -> None:
    extra = (
        f"Authentication-Results: other.example; spf=fail\r\n"
        f"Authentication-Results: {HOSTNAME.upper()} (forged);\r\n\tdkim=pass\r\n"
        f"X-Appliance-Decision: d0; action=accept\r\n"
    )
    answer = await hook.answer(data_request(message(extra=extra)))
    assert answer["action"] == "accept"
    assert answer["modifications"][:2] == [
        {"type": "deleteHeader", "index": 1, "name": "X-Appliance-Decision"},
        {"type": "deleteHeader", "index": 2, "name": "Authentication-Results"},
    ]
    assert [m["type"] for m in answer["modifications"][2:]] == ["addHeader", "addHeader"]


async def test_two_agents_at_data_is_a_tempfail(hook: Hook) -> None:
    answer = await hook.answer(data_request(message(), to=(AGENT, OTHER_AGENT)))
    assert answer["action"] == "reject"
    assert answer["response"]["status"] == 451


async def test_failure_inside_receive_is_a_451_reject(
    hook: Hook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Received:
        raise OSError("disk on fire")

    monkeypatch.setattr(hook.runtime.reception, "receive", broken)
    with caplog.at_level(logging.ERROR, logger="appliance.stalwart"):
        answer = await hook.answer(fixture("data"))
    assert answer["action"] == "reject"
    assert (answer["response"]["status"], answer["response"]["enhanced_status"]) == (451, "4.3.0")
    assert "disk on fire" in caplog.text


# -- the byte-exact rebuild, proven by DKIM --------------------------------------------------------


async def test_dkim_signed_fixture_passes_after_the_rebuild(
    hook: Hook, dns_server: DnsTestServer
) -> None:
    record = fixture("dkim_dns")
    dns_server.add((record["name"], record["type"], record["value"]))
    answer = await hook.answer(fixture("data_dkim"))
    assert answer["action"] == "accept", answer
    assert "dkim=pass" in answer["modifications"][0]["value"]
    row = await hook.decision(decision_id_of(answer))
    assert row is not None and row[2] == "pass"


SIGNED = (
    'From:   "Signer, The"   <news@signed.example>\r\n'
    "To: agent@example.test\r\n"
    "Subject: folded\r\n \t across  lines   \r\n"
    "Date: Mon, 6 Jan 2025 10:00:00 +0000\r\n"
    "Message-ID:<live-1@signed.example>\r\n"
    "X-Spacing:\tvalue  \r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "trailing spaces   \r\n\r\n\tindent, caf\u00e9\r\n.leading dot\r\n"
).encode()


def sign(raw: bytes, private: bytes) -> bytes:
    """``raw`` with a DKIM-Signature prepended, c=simple/simple: any byte changed breaks it."""
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"x-spacing", b"mime-version",
               b"content-type"]
    signature: bytes = dkim.sign(raw, b"live", b"signed.example", private,
                                 canonicalize=(b"simple", b"simple"), include_headers=headers)
    return signature + raw


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


async def test_message_signed_here_with_simple_canonicalization_passes(
    hook: Hook, dns_server: DnsTestServer, dkim_key: tuple[bytes, str]
) -> None:
    private, record = dkim_key
    dns_server.add(("live._domainkey.signed.example", "TXT", record))
    signed = sign(SIGNED, private)
    request = data_request(signed, mail_from="news@signed.example")
    answer = await hook.answer(request)
    assert answer["action"] == "accept", answer
    row = await hook.decision(decision_id_of(answer))
    assert row is not None and row[2] == "pass"

    # The control: one space fewer in a folded header and the same signature no longer verifies.
    tampered = copy.deepcopy(request)
    tampered["message"]["headers"] = [
        [n, v.replace("\r\n \t across", "\r\n\t across")] for n, v in tampered["message"]["headers"]
    ]
    tampered["message"]["size"] -= 1
    answer = await hook.answer(tampered)
    assert answer["action"] == "reject"
    assert answer["response"]["status"] == 550
    assert "DKIM" in answer["response"]["message"]


# -- DMARC aggregate reports ------------------------------------------------------------------------


REPORTS = "dmarc-reports@example.test"


async def test_a_report_to_the_report_address_is_kept_and_discarded(hook: Hook) -> None:
    assert await hook.answer(rcpt_request(REPORTS)) == {"action": "accept"}
    raw = report_message(gzipped(google().encode()), "application/gzip").replace(b"\n", b"\r\n")
    answer = await hook.answer(data_request(raw, mail_from="noreply-dmarc-support@google.com", to=(REPORTS,)))
    assert answer == {"action": "discard"}  # Stalwart answers 250 and keeps nothing
    kept = await hook.runtime.db.read(lambda con: con.execute(
        "SELECT org_name, report_id FROM dmarc_reports").fetchall())
    assert kept == [("google.com", "10402651235457367423")]
    decisions = await hook.runtime.db.read(lambda con: con.execute("SELECT count(*) FROM decisions").fetchone())
    assert decisions == (0,)  # no gate, no agent


async def test_a_report_shares_no_transaction_with_an_agent(hook: Hook) -> None:
    for order in ((AGENT, REPORTS), (REPORTS, AGENT)):
        answer = await hook.answer(rcpt_request(*order))
        assert answer["action"] == "reject" and answer["response"]["status"] == 452, order
