"""The SDK's clients: typed answers and errors, safe retries, the event stream resumed without gaps.

Two halves. The client's own rules (error mapping, which requests are retried,
what is sent, the SSE reading) run against ``httpx.MockTransport`` handlers,
for ``Client`` and ``AsyncClient`` alike. Then the same clients against the
real appliance (its whole app under uvicorn on 127.0.0.1, SMTP in, a calendar
tool behind it): messages, replies and their idempotency, blobs, tools inside
and outside the grant, usage, and the event stream resumed across a restart.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from appliance.config import ApplianceConfig
from appliance.sdk import (
    ApiError,
    AsyncClient,
    Blob,
    CapabilityMissing,
    Client,
    IdempotencyConflict,
    MessageReceived,
    MessageSent,
    NotFound,
    PolicyRefused,
    RateLimited,
    SendResult,
    StreamEvent,
    TokenInvalid,
    TransportError,
)
from appliance.sdk._client import _SseParser
from examples.scheduling_agent.calendar_service import Calendar, Entry, parse_time
from examples.scheduling_agent.calendar_service import serve as serve_calendar
from tests.api.server import Served, serve
from tests.conftest import AGENT
from tests.e2e.harness import free_port

BASE = "http://appliance.test"
KEY = "client-test-key"
Handler = Callable[[httpx.Request], httpx.Response]


# -- the client's own rules, against mock transports -------------------------------------------

def both(handler: Handler, **options: Any) -> tuple[Client, AsyncClient]:
    async def ahandler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return handler(request)

    return (Client(BASE, KEY, transport=httpx.MockTransport(handler), backoff=0.001, **options),
            AsyncClient(BASE, KEY, transport=httpx.MockTransport(ahandler), backoff=0.001, **options))


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def run_both(handler: Handler, call: Callable[[Any], Any], **options: Any) -> list[Any]:
    """``call(client)`` on a Client and on an AsyncClient (awaited); both results, or both exceptions."""
    sync, async_ = both(handler, **options)
    out: list[Any] = []
    try:
        out.append(call(sync))
    except Exception as exc:
        out.append(exc)

    async def go() -> Any:
        try:
            return await call(async_)
        except Exception as exc:
            return exc
        finally:
            await async_.aclose()

    out.append(asyncio.run(go()))
    sync.close()
    return out


@pytest.mark.parametrize(("status", "body", "kind", "reason"), [
    (401, {"error": "token_invalid", "detail": "expired"}, TokenInvalid, "token_invalid"),
    (401, {"status_code": 401, "detail": "agent API key required"}, TokenInvalid, "token_invalid"),
    (403, {"error": "capability_missing", "detail": "confirm_meeting"}, CapabilityMissing, "capability_missing"),
    (403, {"error": "recipient_not_allowed", "detail": "x@y"}, PolicyRefused, "recipient_not_allowed"),
    (404, {"error": "not_found", "detail": "no message"}, NotFound, "not_found"),
    (404, {"status_code": 404, "detail": "Not Found"}, NotFound, "not_found"),
    (422, {"error": "idempotency_conflict", "detail": "another request"}, IdempotencyConflict,
     "idempotency_conflict"),
    (429, {"error": "outbound_rate_limited", "detail": "perHour"}, RateLimited, "outbound_rate_limited"),
    (400, {"error": "invalid_request", "detail": "text: required"}, ApiError, "invalid_request"),
    (502, {"error": "tool_failed", "detail": "refused"}, ApiError, "tool_failed"),
])
def test_errors_are_typed_by_reason_then_status(status: int, body: dict[str, Any], kind: type[ApiError],
                                                reason: str) -> None:
    for error in run_both(answer(status, body), lambda c: c.call_tool("t", {}, capability_token="tok")):
        assert type(error) is kind
        assert (error.status, error.reason, error.detail) == (status, reason, body["detail"])


def test_capability_missing_is_a_policy_refusal_and_every_error_an_api_error() -> None:
    assert issubclass(CapabilityMissing, PolicyRefused)
    for kind in (TokenInvalid, PolicyRefused, NotFound, IdempotencyConflict, RateLimited):
        assert issubclass(kind, ApiError)


def test_rate_limited_carries_retry_after_and_is_not_retried() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, json={"error": "outbound_rate_limited", "detail": "20 per hour"},
                              headers={"retry-after": "120"})

    for error in run_both(handler, lambda c: c.reply("e1", "hi", capability_token="tok")):
        assert isinstance(error, RateLimited)
        assert error.retry_after == 120.0
    assert len(seen) == 2  # once per client


def test_a_reply_sends_the_token_a_key_and_only_the_fields_given() -> None:
    seen: list[httpx.Request] = []
    queued = {"emailId": "s1", "messageId": "<s1@x>", "threadId": "T1", "status": "queued"}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=queued)

    results = run_both(handler, lambda c: c.reply("e 1/x", "See you", capability_token="tok",
                                                  attachments=[Blob(blob_id="b1", size=1, content_type="a/b"), "b2"]))
    assert results == [SendResult(email_id="s1", message_id="<s1@x>", thread_id="T1")] * 2
    for request in seen:
        assert request.url.raw_path == b"/api/v1/messages/e%201%2Fx/reply"
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["x-capability-token"] == "tok"
        assert len(request.headers["idempotency-key"]) == 32
        assert json.loads(request.content) == {"text": "See you",
                                               "attachments": [{"blobId": "b1"}, {"blobId": "b2"}]}
    assert seen[0].headers["idempotency-key"] != seen[1].headers["idempotency-key"]


def test_a_reply_to_message_data_uses_its_email_id_and_token() -> None:
    from tests.delivery.conftest import message

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"emailId": "s1", "messageId": "<s1@x>", "threadId": "T1"})

    data = msgspec.structs.replace(message(7), capability_token="the-token")
    run_both(handler, lambda c: c.reply(data, "ok", idempotency_key="k-7"))
    assert [(r.url.path, r.headers["x-capability-token"], r.headers["idempotency-key"]) for r in seen] == \
        [("/api/v1/messages/e0007/reply", "the-token", "k-7")] * 2
    with pytest.raises(ValueError, match="capability token"):
        Client(BASE, KEY).reply("e1", "no token")


def test_a_send_retried_after_a_lost_answer_keeps_its_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) % 2 == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(202, json={"emailId": "s1", "messageId": "<s1@x>", "threadId": "T1"})

    results = run_both(handler, lambda c: c.send(["boss@acme.com"], "Hi", "text", capability_token="tok"))
    assert all(isinstance(r, SendResult) for r in results)
    assert len(seen) == 4
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]
    assert seen[2].headers["idempotency-key"] == seen[3].headers["idempotency-key"]
    assert json.loads(seen[0].content) == {"text": "text", "to": ["boss@acme.com"], "subject": "Hi"}


def test_a_send_whose_key_is_still_in_flight_is_asked_again() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] in (1, 3):
            return httpx.Response(409, json={"error": "idempotency_conflict", "detail": "in flight"})
        return httpx.Response(202, json={"emailId": "s1", "messageId": "<s1@x>", "threadId": "T1"})

    assert all(isinstance(r, SendResult) for r in run_both(handler, lambda c: c.reply("e1", "x", capability_token="t")))


def test_a_tool_call_is_never_repeated_once_it_may_have_arrived() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("no answer", request=request)

    for error in run_both(handler, lambda c: c.call_tool("confirm_meeting", {"a": 1}, capability_token="tok")):
        assert isinstance(error, TransportError)
        assert "confirm_meeting" in str(error)
    assert len(seen) == 2


def test_a_connection_never_made_is_retried_for_any_request_then_raised() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("refused", request=request)

    for error in run_both(handler, lambda c: c.report_usage("T1", 5), retries=3):
        assert isinstance(error, TransportError)
    assert len(seen) == 8  # 1 + 3 retries, per client


def test_a_get_is_retried_while_the_appliance_starts() -> None:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] % 2:
            return httpx.Response(503, json={"error": "unavailable", "detail": "starting"})
        return httpx.Response(200, json={"emailId": "e1", "text": "hello", "html": None})

    assert [r.text for r in run_both(handler, lambda c: c.body("e1"))] == ["hello", "hello"]


def test_answers_are_typed_and_tolerate_fields_they_do_not_know() -> None:
    routes: dict[str, httpx.Response] = {
        "/api/v1/messages/e1": httpx.Response(200, json={
            "emailId": "e1", "threadId": "T1", "messageId": "<m@x>", "mailbox": "inbox", "from": "a@b.c", "to": ["x@y"],
            "cc": [], "subject": "S", "receivedAt": "2026-11-23T10:00:00Z", "size": 10, "decisionId": "d1",
            "attachments": [{"index": 0, "filename": "a.pdf", "contentType": "application/pdf", "size": 3}],
            "future": True}),
        "/api/v1/messages/e1/raw": httpx.Response(200, content=b"From: a@b.c\r\n\r\nhi\r\n",
                                                  headers={"content-type": "message/rfc822"}),
        "/api/v1/messages/e1/attachments/0": httpx.Response(200, content=b"%PDF", headers={
            "content-type": "application/pdf", "content-disposition": 'attachment; filename="agenda.pdf"'}),
        "/api/v1/blobs": httpx.Response(201, json={"blobId": "b1", "size": 4, "contentType": "text/plain",
                                                   "filename": "n.txt"}),
        "/api/v1/tools": httpx.Response(200, json=[{"name": "t", "capability": "c", "description": "d",
                                                    "inputSchema": {"type": "object"}}]),
        "/api/v1/usage": httpx.Response(200, json={"threadId": "T1", "charged": 5, "threadTotal": 12}),
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return routes[request.url.path]

    with Client(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        summary = client.message("e1")
        assert (summary.sender, summary.attachments[0].filename, summary.received_at.year) == ("a@b.c", "a.pdf", 2026)
        assert client.raw("e1").startswith(b"From:")
        got = client.attachment("e1", 0)
        assert (got.content, got.content_type, got.filename) == (b"%PDF", "application/pdf", "agenda.pdf")
        blob = client.upload_blob(b"note", content_type="text/plain", filename="n.txt")
        assert blob.blob_id == "b1"
        assert client.tools()[0].input_schema == {"type": "object"}
        assert client.report_usage("T1", 5).thread_total == 12
    upload = next(r for r in seen if r.url.path == "/api/v1/blobs")
    assert (upload.content, upload.headers["content-type"], upload.url.params["filename"]) == \
        (b"note", "text/plain", "n.txt")
    assert json.loads(next(r for r in seen if r.url.path == "/api/v1/usage").content) == {"threadId": "T1",
                                                                                         "tokens": 5}


def test_call_tool_decodes_into_the_type_asked_for() -> None:
    class Slots(msgspec.Struct):
        slots: list[dict[str, str]]

    handler = answer(200, {"slots": [{"start": "a", "end": "b"}], "busy": []})
    with Client(BASE, KEY, transport=httpx.MockTransport(handler)) as client:
        assert client.call_tool("t", capability_token="x", type=Slots) == Slots(slots=[{"start": "a", "end": "b"}])
        assert client.call_tool("t", capability_token="x")["busy"] == []


# -- the event stream, against mock transports -------------------------------------------------

RECEIVED = (b'{"type":"message.received","timestamp":"2026-11-23T10:00:00Z","data":{"agent":"a@x","decisionId":"d",'
            b'"emailId":"e%d","threadId":"T1","messageId":null,"from":"b@y","to":[],"cc":[],"subject":"S",'
            b'"receivedAt":"2026-11-23T10:00:00Z","text":"t","capabilities":["read"],"capabilityToken":"tok"}}')


def frame(n: int, kind: str = "message.received") -> bytes:
    data = (RECEIVED.replace(b"e%d", f"e{n}".encode()) if kind == "message.received"
            else b'{"type":"%s"}' % kind.encode())
    return b"id: d%d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (n, kind.encode(), data)


class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Some bytes, then a dropped connection (or a clean end)."""

    def __init__(self, chunks: list[bytes], *, drop: bool) -> None:
        self.chunks, self.drop = chunks, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        if self.drop:
            raise httpx.ReadError("connection reset")


def stream_handler(plan: list[Callable[[httpx.Request], httpx.Response]]) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return plan[min(len(seen), len(plan)) - 1](request)

    return handler, seen


def take(client: Client | AsyncClient, count: int, **options: Any) -> list[StreamEvent]:
    if isinstance(client, Client):
        out = []
        for item in client.events(backoff=0.001, **options):
            out.append(item)
            if len(out) == count:
                break
        return out

    async def go() -> list[StreamEvent]:
        found: list[StreamEvent] = []
        async for item in client.events(backoff=0.001, **options):
            found.append(item)
            if len(found) == count:
                break
        return found

    return asyncio.run(go())


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_stream_resumes_after_a_drop_with_the_last_event_id(flavour: str) -> None:
    def ok(chunks: list[bytes], drop: bool) -> Callable[[httpx.Request], httpx.Response]:
        return lambda request: httpx.Response(200, stream=Broken(chunks, drop=drop),
                                              headers={"content-type": "text/event-stream"})

    handler, seen = stream_handler([
        ok([b"retry: 2000\r\n: events for a@x after 0\r\n\r\n", frame(1), frame(2)[:30]], True),  # cut mid-event
        lambda request: httpx.Response(503, json={"error": "unavailable", "detail": "starting"}),
        ok([frame(2), b": keepalive\r\n\r\n", frame(3)], False),  # a clean end: reconnect too
        ok([frame(4)], True),
    ])
    sync, async_ = both(handler)
    got = take(sync if flavour == "sync" else async_, 4)
    assert [g.id for g in got] == ["d1", "d2", "d3", "d4"]
    assert all(isinstance(g.event, MessageReceived) for g in got)
    assert [g.event.data.email_id for g in got if isinstance(g.event, MessageReceived)] == ["e1", "e2", "e3", "e4"]
    assert [r.headers.get("last-event-id") for r in seen] == [None, "d1", "d1", "d3"]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in seen)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_stream_starts_after_a_given_id_and_keeps_unknown_types(flavour: str) -> None:
    handler, seen = stream_handler([lambda request: httpx.Response(200, content=frame(5, "agent.future") + frame(6))])
    sync, async_ = both(handler)
    got = take(sync if flavour == "sync" else async_, 2, last_event_id="d4")
    assert seen[0].headers["last-event-id"] == "d4"
    assert (got[0].type, got[0].event, json.loads(got[0].data)) == ("agent.future", None, {"type": "agent.future"})
    assert isinstance(got[1].event, MessageReceived)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_stream_gives_up_after_its_retries(flavour: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    handler, seen = stream_handler([refuse])
    sync, async_ = both(handler)
    with pytest.raises(TransportError, match="after 4 attempts"):
        take(sync if flavour == "sync" else async_, 1, max_retries=3)
    assert len(seen) == 4


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_stream_that_dies_after_its_200_every_time_is_not_reopened_forever(flavour: str) -> None:
    handler, seen = stream_handler([lambda request: httpx.Response(
        200, stream=Broken([b": events for a@x after 0\r\n\r\n"], drop=len(seen) % 2 == 0))])
    sync, async_ = both(handler)
    with pytest.raises(TransportError, match="after 6 attempts"):
        take(sync if flavour == "sync" else async_, 1, max_retries=5)
    assert len(seen) == 6


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_the_stream_raises_a_bad_key_at_once(flavour: str) -> None:
    handler, seen = stream_handler([answer(401, {"status_code": 401, "detail": "agent API key required"})])
    sync, async_ = both(handler)
    with pytest.raises(TokenInvalid):
        take(sync if flavour == "sync" else async_, 1)
    assert len(seen) == 1


def test_sse_lines_are_read_as_the_format_says() -> None:
    parser = _SseParser()
    lines = [": comment", "retry: 10", "", "id: 1", "event: a", "data: one", "data:two", "data:  three", "",
             "data: no id given", "", "id: 2", "", "id", "data: x", ""]
    events = [e for e in map(parser.line, lines) if e is not None]
    assert events == [("1", "a", "one\ntwo\n three"), ("1", "message", "no id given"), ("", "message", "x")]


# -- against the real appliance ----------------------------------------------------------------

POLICY = """
defaultAction = "bounce"

[[senders]]
match = { domain = "example.net" }
capabilities = ["read_calendar", "propose_meeting"]

[[senders]]
match = { domain = "notices.example" }
capabilities = ["read_calendar"]
"""
TOOLS = [("calendar_availability", "availability", "read_calendar"), ("propose_meeting", "propose", "propose_meeting"),
         ("confirm_meeting", "confirm", "confirm_meeting")]


class Live:
    """The appliance (uvicorn in a thread), its SMTP port, a calendar tool behind it, and an SDK client."""

    def __init__(self, config: ApplianceConfig, calendar: Calendar) -> None:
        self.config = config
        self.calendar = calendar
        self.smtp_port = int(config.smtp.listen.rpartition(":")[2])
        self.http_port = free_port()
        self.served: Served | None = None
        self._context: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Live:
        self._context = serve(self.config, port=self.http_port)
        self.served = self._context.__enter__()
        deadline = time.monotonic() + 20
        while httpx.get(f"{self.url}/healthz", timeout=2).status_code != 200:
            assert time.monotonic() < deadline, "the appliance did not become healthy"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def mail(self, sender: str, subject: str, text: str, *, attachment: bytes | None = None) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, AGENT, subject
        msg["Message-ID"] = f"<{time.monotonic_ns()}@{sender.partition('@')[2]}>"
        msg.set_content(text)
        if attachment is not None:
            msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="agenda.pdf")
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg, from_addr=sender, to_addrs=[AGENT])


@pytest.fixture
def live(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> Iterator[Live]:
    monkeypatch.setenv("TEST_CLIENT_AGENT_KEY", KEY)
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "client-admin-token")
    calendar = Calendar([Entry(id="busy", start=parse_time("2026-11-26T09:00:00Z", "s"),
                               end=parse_time("2026-11-26T10:00:00Z", "e"), title="Stand-up")])
    tool_server = serve_calendar(calendar)
    threading.Thread(target=tool_server.serve_forever, daemon=True).start()
    tool_url = f"http://127.0.0.1:{tool_server.server_address[1]}"
    config = make_config(mode="sandbox", policies={AGENT: POLICY}, smtp={"listen": f"127.0.0.1:{free_port()}"},
                         outbound={"transport": "capture"},
                         tools=[{"name": n, "url": f"{tool_url}/{p}", "capability": c} for n, p, c in TOOLS])
    agents = [msgspec.structs.replace(a, api_key_env="TEST_CLIENT_AGENT_KEY") for a in config.agents]
    box = Live(msgspec.structs.replace(config, agents=agents), calendar).start()
    try:
        yield box
    finally:
        box.stop()
        tool_server.shutdown()
        tool_server.server_close()


def stream_until(client: Client, wanted: Callable[[StreamEvent], bool], count: int = 1, *,
                 after: str | None = None, timeout: float = 30.0) -> list[StreamEvent]:
    """The next ``count`` events of the stream that ``wanted`` picks, within ``timeout`` seconds."""
    out: list[StreamEvent] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            for item in client.events(last_event_id=after, backoff=0.05, read_timeout=20):
                if wanted(item):
                    out.append(item)
                    if len(out) == count:
                        return
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not failure, failure
    assert len(out) == count, f"{len(out)} of {count} events within {timeout} s"
    return out


def received(client: Client, count: int) -> list[StreamEvent]:
    """The first ``count`` message.received events of the stream."""
    return stream_until(client, lambda item: isinstance(item.event, MessageReceived), count)


def test_messages_body_raw_and_attachment_are_typed(live: Live) -> None:
    live.mail("alice@example.net", "Agenda", "Can we meet on Thursday?\n", attachment=b"%PDF-1.4 agenda")
    with Client(live.url, KEY) as client:
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        data = item.event.data
        assert data.capabilities == ["read_calendar", "propose_meeting"]
        summary = client.message(data.email_id)
        assert (summary.email_id, summary.thread_id, summary.sender, summary.subject) == \
            (data.email_id, data.thread_id, "alice@example.net", "Agenda")
        assert client.body(data.email_id).text.startswith("Can we meet on Thursday?")
        assert b"Subject: Agenda" in client.raw(data.email_id)
        got = client.attachment(data.email_id, 0)
        assert (got.content, got.content_type, got.filename) == (b"%PDF-1.4 agenda", "application/pdf", "agenda.pdf")
        with pytest.raises(NotFound):
            client.attachment(data.email_id, 5)
        with pytest.raises(NotFound):
            client.body("e-not-there")
        assert client.introspect(data.capability_token).capabilities == ["read_calendar", "propose_meeting"]
    with Client(live.url, "wrong-key") as stranger, pytest.raises(TokenInvalid):
        stranger.body(data.email_id)


def test_a_reply_is_queued_once_per_idempotency_key(live: Live) -> None:
    live.mail("alice@example.net", "Lunch?", "Can we meet on Thursday?\n")
    with Client(live.url, KEY) as client:
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        data = item.event.data
        first = client.reply(data, "Thursday 10:00?", idempotency_key="reply-1")
        again = client.reply(data, "Thursday 10:00?", idempotency_key="reply-1")
        assert first == again
        assert (first.status, first.thread_id) == ("queued", data.thread_id)
        with pytest.raises(IdempotencyConflict) as conflict:
            client.reply(data, "Friday instead?", idempotency_key="reply-1")
        assert (conflict.value.status, conflict.value.reason) == (422, "idempotency_conflict")
        sent = client.message(first.email_id)
        assert (sent.mailbox, sent.thread_id, sent.message_id) == ("sent", data.thread_id, first.message_id)
        assert client.sent(first.email_id).to == ["alice@example.net"]
        (sent_event,) = stream_until(client, lambda i: isinstance(i.event, MessageSent), after=item.id)
        assert isinstance(sent_event.event, MessageSent)
        assert sent_event.event.data.email_id == first.email_id
        with pytest.raises(TokenInvalid):
            client.reply(data.email_id, "forged", capability_token=data.capability_token + "x")


def test_new_mail_without_send_email_is_a_policy_refusal(live: Live) -> None:
    live.mail("alice@example.net", "Hello", "Hi there\n")
    with Client(live.url, KEY) as client:
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        with pytest.raises(PolicyRefused) as refused:
            client.send(["someone@elsewhere.example"], "Hi", "hello", capability_token=item.event.data.capability_token)
        assert refused.value.status == 403


def test_blobs_upload_and_attach_to_a_reply(live: Live) -> None:
    live.mail("alice@example.net", "Notes", "Please send the notes\n")
    with Client(live.url, KEY) as client:
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        blob = client.upload_blob(b"the notes\n", content_type="text/plain; charset=utf-8", filename="notes.txt")
        assert (blob.size, blob.content_type, blob.filename) == (10, "text/plain; charset=utf-8", "notes.txt")
        result = client.reply(item.event.data, "Attached.", attachments=[blob])
        summary = client.message(result.email_id)
        assert [a.filename for a in summary.attachments] == ["notes.txt"]
        with pytest.raises(NotFound):
            client.reply(item.event.data, "Attached.", attachments=["b-not-mine"])


def test_tools_inside_the_grant_are_forwarded_and_outside_it_never_reach_the_tool(live: Live) -> None:
    live.mail("alerts@notices.example", "Conflict", "Thursday's stand-up overlaps the offsite\n")
    with Client(live.url, KEY) as client:
        assert {t.name: t.capability for t in client.tools()} == {n: c for n, _, c in TOOLS}
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        token = item.event.data.capability_token
        free = client.call_tool("calendar_availability", {"from": "2026-11-26", "limit": 2}, capability_token=token)
        assert free["slots"] == [{"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:30:00Z"},
                                 {"start": "2026-11-26T10:30:00Z", "end": "2026-11-26T11:00:00Z"}]
        calls = len(live.calendar.calls)
        slot = {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:30:00Z", "title": "Sync"}
        for name in ("propose_meeting", "confirm_meeting"):
            with pytest.raises(CapabilityMissing) as refused:
                client.call_tool(name, slot, capability_token=token)
            assert (refused.value.status, refused.value.reason) == (403, "capability_missing")
        assert len(live.calendar.calls) == calls  # the calendar never heard of them
        assert live.calendar.calls[-1]["thread"] == item.event.data.thread_id
        with pytest.raises(NotFound):
            client.call_tool("no_such_tool", {}, capability_token=token)
        with pytest.raises(TokenInvalid):
            client.call_tool("calendar_availability", {}, capability_token="forged")


def test_usage_is_charged_to_the_thread(live: Live) -> None:
    live.mail("alice@example.net", "Budget", "Can we meet?\n")
    with Client(live.url, KEY) as client:
        (item,) = received(client, 1)
        assert isinstance(item.event, MessageReceived)
        thread = item.event.data.thread_id
        first = client.report_usage(thread, 100)
        second = client.report_usage(thread, 50)
        assert (first.charged, second.thread_total - first.thread_total) == (100, 50)
        with pytest.raises(NotFound):
            client.report_usage("T-unknown", 1)


def test_the_async_client_reads_the_same_stream_and_messages(live: Live) -> None:
    live.mail("alice@example.net", "Async", "Can we meet on Friday?\n")

    async def go() -> tuple[str, str]:
        async with AsyncClient(live.url, KEY) as client:
            async for item in client.events(backoff=0.05, read_timeout=20):
                if isinstance(item.event, MessageReceived):
                    body = await client.body(item.event.data.email_id)
                    return item.event.data.subject, body.text
        raise AssertionError("the stream ended")

    assert asyncio.run(go()) == ("Async", "Can we meet on Friday?\n")


def test_the_stream_resumes_across_an_appliance_restart_without_gaps_or_repeats(live: Live) -> None:
    got: list[StreamEvent] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            with Client(live.url, KEY) as client:
                for item in client.events(backoff=0.05, max_backoff=0.5, max_retries=100, read_timeout=20):
                    got.append(item)
                    if sum(isinstance(g.event, MessageReceived) for g in got) == 4:
                        break
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while sum(isinstance(g.event, MessageReceived) for g in got) < count:
            assert not failure, failure
            assert time.monotonic() < deadline, f"{len(got)} events: {[g.type for g in got]}"
            time.sleep(0.05)

    threading.Thread(target=consume, daemon=True).start()
    for n in (1, 2):
        live.mail("alice@example.net", f"Before {n}", "hello\n")
    wait_for(2)
    live.stop()  # the stream is cut; the client retries against a closed port
    time.sleep(0.5)
    live.start()
    for n in (3, 4):
        live.mail("alice@example.net", f"After {n}", "hello\n")
    assert done.wait(30), f"{len(got)} events"
    assert not failure, failure
    ids = [g.id for g in got]
    assert len(ids) == len(set(ids))
    subjects = [g.event.data.subject for g in got if isinstance(g.event, MessageReceived)]
    assert subjects == ["Before 1", "Before 2", "After 3", "After 4"]
