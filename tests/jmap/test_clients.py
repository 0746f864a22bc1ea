"""Third-party JMAP clients (jmapc, jmaplib) driving a running sandbox over HTTP, its mail sent over SMTP.

Where a client and the RFC disagree, the server follows the RFC and the test says so:

- jmapc fetches the Session from ``https://{host}/.well-known/jmap`` only; the sandbox speaks plain
  HTTP on 127.0.0.1, so the test points its session fetch at ``http://`` (a client limitation, not
  a protocol difference: everything after the Session uses the URLs the Session names).
- jmapc's ``StateChange`` model reads the RFC 8620 7.1 ``@type`` member as ``type`` and drops it;
  the server sends ``"@type": "StateChange"`` as the RFC says.
- jmapc's ``EmailQueryFilterCondition`` has no ``subject`` (RFC 8621 4.4.1 defines it; the server
  serves it, see test_email): the jmapc test filters by ``text``.
"""

from __future__ import annotations

import functools
import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jmapc
import pytest
from jmap.auth.credentials import BearerAuth
from jmap.client import JMAPClient
from jmap.push.eventsource import Ping, StateChange
from jmap.push.listener import EventSourceClient
from jmapc.methods import EmailGet, EmailQuery, EmailSet, MailboxGet, MailboxQuery, ThreadGet

from tests.conftest import AGENT, POLICY
from tests.e2e.harness import ApplianceProcess, write_config
from tests.jmap.conftest import message

KEY = "agent-test-key"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApplianceProcess]:
    directory: Path = tmp_path_factory.mktemp("jmap-clients")
    config = write_config(directory, policy=POLICY)
    with ApplianceProcess(config, env={"APPLIANCE_DNS_OFFLINE": "true"}) as proc:
        yield proc


def send(proc: ApplianceProcess, raw: bytes, sender: str = "alice@example.net") -> None:
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as smtp:
        smtp.sendmail(sender, [AGENT], raw)


class HttpClient(jmapc.Client):
    """jmapc, its Session fetched over plain HTTP (it only knows https://; see the module docstring)."""

    @functools.cached_property
    def jmap_session(self) -> jmapc.session.Session:  # type: ignore[override]
        r = self.requests_session.get(f"http://{self._host}/.well-known/jmap", timeout=30)
        r.raise_for_status()
        return jmapc.session.Session.from_dict(r.json())


def jmapc_client(proc: ApplianceProcess, **kwargs: Any) -> HttpClient:
    return HttpClient.create_with_api_token(f"127.0.0.1:{proc.http_port}", KEY, **kwargs)


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_jmapc_reads_the_inbox_sets_keywords_and_moves(sandbox: ApplianceProcess) -> None:
    send(sandbox, message(subject="jmapc one", text="first body", message_id="<jc1@example.net>"))
    client = jmapc_client(sandbox)
    inbox = client.request(MailboxQuery(filter=jmapc.MailboxQueryFilterCondition(role="inbox")))
    assert isinstance(inbox, jmapc.methods.MailboxQueryResponse), inbox
    inbox_id = inbox.ids[0]
    found = wait_for(lambda: client.request(EmailQuery(
        filter=jmapc.EmailQueryFilterCondition(in_mailbox=inbox_id, text="jmapc one"))).ids)
    results = client.request([
        EmailQuery(filter=jmapc.EmailQueryFilterCondition(in_mailbox=inbox_id),
                   sort=[jmapc.Comparator(property="receivedAt", is_ascending=False)], limit=10),
        EmailGet(ids=jmapc.Ref("/ids"), properties=["id", "subject", "from", "threadId", "keywords", "textBody",
                                                  "bodyValues", "receivedAt"], fetch_text_body_values=True),
        ThreadGet(ids=jmapc.Ref("/list/*/threadId")),
    ])
    emails = results[1].response
    assert isinstance(emails, jmapc.methods.EmailGetResponse), emails
    email = next(e for e in emails.data if e.id == found[0])
    assert email.subject == "jmapc one" and email.mail_from[0].email == "alice@example.net"
    assert email.body_values[email.text_body[0].part_id].value.strip() == "first body"
    threads = results[2].response
    assert isinstance(threads, jmapc.methods.ThreadGetResponse)
    assert any(email.id in t.email_ids for t in threads.data)
    archive = client.request(MailboxQuery(filter=jmapc.MailboxQueryFilterCondition(role="archive"))).ids[0]
    done = client.request(EmailSet(update={email.id: {"keywords/$seen": True, "mailboxIds": {archive: True}}}))
    assert isinstance(done, jmapc.methods.EmailSetResponse) and email.id in done.updated
    moved = client.request(EmailGet(ids=[email.id], properties=["mailboxIds", "keywords"])).data[0]
    assert moved.mailbox_ids == {archive: True} and moved.keywords == {"$seen": True}
    boxes = client.request(MailboxGet(ids=[inbox_id, archive])).data
    assert {b.role: b.total_emails >= 0 for b in boxes} == {"inbox": True, "archive": True}
    client.requests_session.close()


def test_jmapc_follows_the_event_source(sandbox: ApplianceProcess) -> None:
    client = jmapc_client(sandbox, event_source_config=jmapc.EventSourceConfig(types="Email", closeafter="no",
                                                                                ping=0))
    account = client.account_id
    events: list[Any] = []

    def listen() -> None:
        for event in client.events:
            events.append(event)
            break
        assert client._events is not None
        client._events.resp.close()  # sseclient keeps the response open

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)
    sent = time.monotonic()
    send(sandbox, message(subject="jmapc push"))
    wait_for(lambda: events, timeout=5)
    assert time.monotonic() - sent < 2.0
    state = events[0].data.changed[account].email
    assert state == client.request(EmailGet(ids=[])).state
    listener.join(5)
    client.requests_session.close()


def test_jmaplib_queries_reads_sets_and_listens(sandbox: ApplianceProcess) -> None:
    send(sandbox, message(subject="jmaplib one", text="lib body", html="<p>lib <b>html</b></p>"))
    with JMAPClient.connect(f"http://127.0.0.1:{sandbox.http_port}/.well-known/jmap", auth=BearerAuth(KEY)) as client:
        jmaplib_session(sandbox, client)


def jmaplib_session(sandbox: ApplianceProcess, client: JMAPClient) -> None:
    ids = wait_for(lambda: client.call("Email/query", {"filter": {"subject": "jmaplib one"}}).ids)
    with client.batch() as batch:
        query = batch.mail.email.query(filter={"inMailbox": "inbox"},
                                       sort=[{"property": "receivedAt", "isAscending": False}],
                                       calculate_total=True)
        got = batch.mail.email.get(ids=query.ref_ids(), properties=["subject", "htmlBody", "bodyValues",
                                                                    "mailboxIds"],
                                   fetchHTMLBodyValues=True)
    assert ids[0] in query.result.ids and query.result.total >= 1
    email = next(e for e in got.result.items if e.id == ids[0])
    assert email.subject == "jmaplib one" and email.mailbox_ids == {"inbox": True}
    assert email.html_body is not None and email.body_values is not None
    value = email.body_values[str(email.html_body[0].part_id)].value
    assert value is not None and "<b>html</b>" in value
    result = client.call("Email/set", {"update": {ids[0]: {"keywords/$flagged": True}}})
    assert ids[0] in (result.updated or {})
    listener = EventSourceClient(client, types=["Email", "Mailbox"], close_after_state=True, ping=0)
    seen: list[Any] = []

    def listen() -> None:
        events = listener.events()
        for event in events:
            if isinstance(event, StateChange):
                seen.append(event)
                break
            assert isinstance(event, Ping)
        events.close()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(0.5)
    send(sandbox, message(subject="jmaplib push"))
    wait_for(lambda: seen, timeout=5)
    thread.join(5)
    account = client.default_account
    assert account is not None
    assert set(seen[0].changed[account]) <= {"Email", "Mailbox"} and seen[0].changed[account]
    blob = client.upload(b"%PDF-1.4 from jmaplib", content_type="application/pdf")
    assert httpx.get(f"http://127.0.0.1:{sandbox.http_port}/api/v1/jmap/download/{account}/{blob.blob_id}/x.pdf",
                     headers={"Authorization": f"Bearer {KEY}"}).content == b"%PDF-1.4 from jmaplib"
