"""Stalwart mode's JMAP proxy, its upstream a real JMAP server: our own sandbox appliance over HTTP.

The upstream is a sandbox app served by uvicorn on 127.0.0.1 (its mail sent over SMTP), wrapped in
a small ASGI middleware that counts and keeps the API requests reaching it. The stalwart-mode app
in front of it forwards with each agent's upstream key (``stalwart_secret_env``, ``Bearer ...``: the
sandbox takes keys as Bearer tokens) and its own keys for our callers, so a proxy key is never an
upstream key. The sandbox names accounts exactly as we do (it is us), so the mapping of upstream
ids to ours is also tested against a Stalwart-shaped upstream (opaque ids) on a mock transport.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jmapc
import msgspec
import pytest
import uvicorn
from jmapc.methods import EmailQuery

from appliance.app import create_app
from appliance.config import ApplianceConfig
from appliance.gate import Envelope
from appliance.jmap.proxy import JmapProxy, SessionCache, Upstream, upstream_from_config
from appliance.jmap.service import for_runtime
from appliance.runtime import Runtime
from appliance.store.audit import event_count
from tests.conftest import AGENT, OTHER_AGENT
from tests.jmap.conftest import ACCOUNT, OTHER_ACCOUNT, USING, jmap_config, message
from tests.jmap.test_clients import HttpClient

PROXY_MINE = {"Authorization": "Bearer proxy-agent-key"}
PROXY_THEIRS = {"Authorization": "Bearer proxy-other-key"}
PROXY_ADMIN = {"Authorization": "Bearer proxy-admin-token"}
GATE = "urn:appliance:jmap:gate"


class Counting:
    """ASGI middleware: every request's path, and the bodies of API requests, as the upstream saw them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []
        self.api_bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.paths.append(scope["path"])
        if scope["method"] != "POST" or scope["path"] not in ("/api/v1/jmap", "/jmap"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        body = b"".join(chunks)
        self.api_bodies.append(msgspec.json.decode(body))
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @property
    def api_calls(self) -> int:
        return len(self.api_bodies)


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    sock = _listener()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    port: int = sock.getsockname()[1]
    return server, task, port


async def _stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await asyncio.wait_for(task, 30)


class Setup:
    """The running pair: the upstream sandbox (its counter, SMTP port) and the proxy in front of it."""

    def __init__(self, upstream: Counting, upstream_url: str, smtp_port: int, proxy_url: str,
                 proxy_runtime: Runtime, proxy_app: Any) -> None:
        self.upstream = upstream
        self.upstream_url = upstream_url
        self.smtp_port = smtp_port
        self.proxy_url = proxy_url
        self.proxy_runtime = proxy_runtime
        self.proxy_app = proxy_app
        self.http = httpx.AsyncClient(base_url=proxy_url, timeout=30)

    async def jmap(self, calls: list[list[Any]], headers: dict[str, str] = PROXY_MINE) -> dict[str, Any]:
        response = await self.http.post("/api/v1/jmap", json={"using": USING, "methodCalls": calls}, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def send(self, raw: bytes, sender: str = "alice@example.net", to: str = AGENT) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.sendmail(sender, [to], raw)


def proxy_config(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch, jmap_url: str,
                 tmp_path: Path) -> ApplianceConfig:
    monkeypatch.setenv("TEST_PROXY_ADMIN", "proxy-admin-token")
    monkeypatch.setenv("TEST_PROXY_AGENT_KEY", "proxy-agent-key")
    monkeypatch.setenv("TEST_PROXY_OTHER_KEY", "proxy-other-key")
    monkeypatch.setenv("TEST_UPSTREAM_ADMIN", "Bearer jmap-admin-token")
    monkeypatch.setenv("TEST_UPSTREAM_AGENT", "Bearer jmap-agent-key")
    monkeypatch.setenv("TEST_UPSTREAM_OTHER", "Bearer jmap-other-key")
    (tmp_path / "proxy-var").mkdir(exist_ok=True)
    config = make_config(mode="stalwart", data_dir="proxy-var", http={"admin_token_env": "TEST_PROXY_ADMIN"},
                         stalwart={"jmap_url": jmap_url, "admin_secret_env": "TEST_UPSTREAM_ADMIN",
                                                             "manage": False})
    agents = [msgspec.structs.replace(a, api_key_env=key, stalwart_secret_env=secret) for a, key, secret in
              zip(config.agents, ["TEST_PROXY_AGENT_KEY", "TEST_PROXY_OTHER_KEY"],
                  ["TEST_UPSTREAM_AGENT", "TEST_UPSTREAM_OTHER"], strict=True)]
    return msgspec.structs.replace(config, agents=agents)


@pytest.fixture
async def setup(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> AsyncIterator[Setup]:
    smtp_port = _free_port()
    upstream_config = jmap_config(make_config, monkeypatch, mode="sandbox",
                                  smtp={"listen": f"127.0.0.1:{smtp_port}"})
    upstream = Counting(create_app(upstream_config))
    up_server, up_task, up_port = await _serve(upstream)
    upstream_url = f"http://127.0.0.1:{up_port}"
    try:
        proxy_app = create_app(proxy_config(make_config, monkeypatch, upstream_url, tmp_path))
        server, task, port = await _serve(proxy_app)
        try:
            ready = Setup(upstream, upstream_url, smtp_port, f"http://127.0.0.1:{port}",
                          proxy_app.state.runtime, proxy_app)
            yield ready
            await ready.http.aclose()
        finally:
            await _stop(server, task)
    finally:
        await _stop(up_server, up_task)


async def _inbox(setup: Setup, headers: dict[str, str] = PROXY_MINE, account: str = ACCOUNT) -> str:
    body = await setup.jmap([["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "m"]], headers)
    inbox: str = body["methodResponses"][0][1]["ids"][0]
    return inbox


async def _query(setup: Setup, text: str) -> list[str]:
    for _ in range(100):
        body = await setup.jmap([["Email/query", {"accountId": ACCOUNT, "filter": {"text": text}}, "q"]])
        ids: list[str] = body["methodResponses"][0][1]["ids"]
        if ids:
            return ids
        await asyncio.sleep(0.05)
    raise AssertionError(f"no email with {text!r} reached the upstream")


async def test_the_session_has_our_urls_our_account_and_the_vendor_capability(setup: Setup) -> None:
    response = await setup.http.get("/.well-known/jmap", headers=PROXY_MINE)
    assert response.status_code == 200, response.text
    session = response.json()
    assert list(session["accounts"]) == [ACCOUNT]
    assert session["primaryAccounts"]["urn:ietf:params:jmap:mail"] == ACCOUNT
    assert session["capabilities"]["urn:appliance:jmap"]["gateProperty"] == GATE
    assert "urn:appliance:jmap" in session["accounts"][ACCOUNT]["accountCapabilities"]
    for key in ("apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl"):
        assert session[key].startswith(setup.proxy_url + "/api/v1/jmap"), (key, session[key])
        assert setup.upstream_url not in session[key]
    assert session["username"] == AGENT


async def test_query_and_get_return_the_upstreams_mail_with_the_gate_view(setup: Setup) -> None:
    await asyncio.to_thread(setup.send, message(subject="over smtp", text="proxied body one"))
    # A message as Stalwart stores it: decided by our hook, our trace headers on it. Our decision
    # is in our audit; the message goes upstream through the proxy (upload, then Email/import).
    raw = message(subject="decided here", text="proxied body two", message_id="<p2@example.net>")
    raw = raw.replace(b"\n", b"\r\n")  # as on the wire: our trace headers end in CRLF
    envelope = Envelope(client_ip="192.0.2.1", helo="mail.example.net", mail_from="alice@example.net",
                        rcpt_to=[AGENT])
    reception = setup.proxy_runtime.reception
    received = await reception.receive(envelope, raw, agent=AGENT, intake="hook")
    stored = reception.trace_headers(received.decision) + raw
    uploaded = await setup.http.post(f"/api/v1/jmap/upload/{ACCOUNT}", content=stored,
                                     headers={**PROXY_MINE, "content-type": "message/rfc822"})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["accountId"] == ACCOUNT
    inbox = await _inbox(setup)
    body = await setup.jmap([["Email/import", {"accountId": ACCOUNT, "emails": {"e": {
        "blobId": uploaded.json()["blobId"], "mailboxIds": {inbox: True}}}}, "i"]])
    assert body["methodResponses"][0][0] == "Email/import", body
    assert body["methodResponses"][0][1]["created"]["e"]["id"], body
    await _query(setup, "proxied body one")
    body = await setup.jmap([
        ["Email/query", {"accountId": ACCOUNT, "filter": {"inMailbox": inbox}}, "q"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": ["subject", GATE]}, "g"]])
    (_, query, _), (name, got, _) = body["methodResponses"]
    assert name == "Email/get" and got["accountId"] == ACCOUNT and query["accountId"] == ACCOUNT
    by_subject = {e["subject"]: e for e in got["list"]}
    assert set(by_subject) >= {"over smtp", "decided here"}
    view = by_subject["decided here"][GATE]
    assert view["decisionId"] == received.decision.decision_id
    assert view["action"] == received.decision.action and view["intake"] == "hook"
    assert set(view["authResults"]) == {"spf", "dkim", "dmarc"}
    assert by_subject["over smtp"][GATE] is None  # decided by the upstream sandbox, not in our audit
    assert all(set(e) == {"id", "subject", GATE} for e in got["list"])  # the header we asked for is gone
    forwarded = setup.upstream.api_bodies[-1]
    assert "urn:appliance:jmap" not in forwarded["using"]
    assert GATE not in forwarded["methodCalls"][1][1]["properties"]


async def test_email_set_keywords_round_trip(setup: Setup) -> None:
    await asyncio.to_thread(setup.send, message(subject="flag me", text="keyword body"))
    email_id = (await _query(setup, "keyword body"))[0]
    body = await setup.jmap([["Email/set", {"accountId": ACCOUNT, "update": {
        email_id: {"keywords/$seen": True, "keywords/$flagged": True}}}, "s"]])
    assert email_id in body["methodResponses"][0][1]["updated"], body
    body = await setup.jmap([["Email/get", {"accountId": ACCOUNT, "ids": [email_id], "properties": ["keywords"]},
                              "g"]])
    assert body["methodResponses"][0][1]["list"][0]["keywords"] == {"$seen": True, "$flagged": True}


async def test_another_agents_account_is_not_found_and_never_forwarded(setup: Setup) -> None:
    await _inbox(setup)  # the upstream Session is cached now
    before = setup.upstream.api_calls
    events = await setup.proxy_runtime.db.read(event_count)
    body = await setup.jmap([["Email/query", {"accountId": OTHER_ACCOUNT}, "a"],
                             ["Mailbox/get", {"accountId": "nonsense"}, "b"],
                             ["Email/get", {"#accountId": {"resultOf": "x", "name": "Email/query",
                                                           "path": "/list/0/id"}, "ids": []}, "c"]])
    assert body["methodResponses"] == [["error", {"type": "accountNotFound"}, "a"],
                                       ["error", {"type": "accountNotFound"}, "b"],
                                       ["error", {"type": "accountNotFound"}, "c"]]
    assert setup.upstream.api_calls == before  # nothing left
    assert await setup.proxy_runtime.db.read(event_count) == events + 3  # audited as the local server does
    # Mixed: only the allowed call travels, its answer and the refusal in the caller's order.
    body = await setup.jmap([["Email/query", {"accountId": OTHER_ACCOUNT}, "a"],
                             ["Mailbox/get", {"accountId": ACCOUNT, "ids": None}, "b"],
                             ["Mailbox/get", {"#accountId": {"resultOf": "b", "name": "Mailbox/get",
                                                             "path": "/accountId"}, "ids": []}, "c"]])
    assert [r[0] for r in body["methodResponses"]] == ["error", "Mailbox/get", "Mailbox/get"]
    assert body["methodResponses"][2][1]["accountId"] == ACCOUNT
    assert setup.upstream.api_calls == before + 1
    sent = setup.upstream.api_bodies[-1]["methodCalls"]
    assert [c[2] for c in sent] == ["b", "c"] and all(c[1]["accountId"] == ACCOUNT for c in sent)
    assert OTHER_ACCOUNT not in msgspec.json.encode(setup.upstream.api_bodies[-1]).decode()
    # Blobs of another account: a 404, like one that does not exist.
    response = await setup.http.get(f"/api/v1/jmap/download/{OTHER_ACCOUNT}/x/y", headers=PROXY_MINE)
    assert response.status_code == 404


async def test_upload_and_download_through_the_proxy(setup: Setup) -> None:
    data = b"%PDF-1.4 not really\n" * 1000
    uploaded = await setup.http.post(f"/api/v1/jmap/upload/{ACCOUNT}", content=data,
                                     headers={**PROXY_MINE, "content-type": "application/pdf"})
    assert uploaded.status_code == 201, uploaded.text
    blob = uploaded.json()
    assert blob["accountId"] == ACCOUNT and blob["size"] == len(data) and blob["type"] == "application/pdf"
    response = await setup.http.get(f"/api/v1/jmap/download/{ACCOUNT}/{blob['blobId']}/report.pdf",
                                    params={"accept": "application/pdf"}, headers=PROXY_MINE)
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"].startswith("application/pdf")
    assert "report.pdf" in response.headers["content-disposition"]
    assert "/api/v1/jmap/download/" in setup.upstream.paths[-1]


async def test_the_admin_key_sees_both_accounts(setup: Setup) -> None:
    response = await setup.http.get("/api/v1/jmap/session", headers=PROXY_ADMIN)
    assert response.status_code == 200, response.text
    assert set(response.json()["accounts"]) == {ACCOUNT, OTHER_ACCOUNT}
    inbox = await _inbox(setup, PROXY_ADMIN, OTHER_ACCOUNT)
    assert inbox
    response = await setup.http.get("/.well-known/jmap", headers=PROXY_THEIRS)
    assert list(response.json()["accounts"]) == [OTHER_ACCOUNT]


async def test_jmapc_queries_through_the_proxy(setup: Setup) -> None:
    await asyncio.to_thread(setup.send, message(subject="for jmapc", text="jmapc proxied"))
    await _query(setup, "jmapc proxied")
    host = setup.proxy_url.removeprefix("http://")

    def query() -> list[str]:
        client = HttpClient.create_with_api_token(host, "proxy-agent-key")
        try:
            assert client.account_id == ACCOUNT
            found = client.request(EmailQuery(filter=jmapc.EmailQueryFilterCondition(text="jmapc proxied")))
            assert isinstance(found, jmapc.methods.EmailQueryResponse), found
            return list(found.ids or [])
        finally:
            client.requests_session.close()

    assert len(await asyncio.to_thread(query)) == 1


async def test_the_event_source_streams_through(setup: Setup) -> None:
    async with setup.http.stream("GET", "/api/v1/jmap/eventsource", params={"types": "*", "closeafter": "state",
                                                                            "ping": "0"},
                                 headers=PROXY_MINE) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        await asyncio.to_thread(setup.send, message(subject="push me", text="pushed"))
        text = ""
        async with asyncio.timeout(20):
            async for chunk in response.aiter_text():
                text += chunk
                if "StateChange" in text:
                    break
    assert ACCOUNT in text


async def test_upstream_down_is_a_503_problem_naming_the_url(make_config: Callable[..., ApplianceConfig],
                                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jmap_config(make_config, monkeypatch)
    url = f"http://127.0.0.1:{_free_port()}"
    app = create_app(proxy_config(make_config, monkeypatch, url, tmp_path))
    server, task, port = await _serve(app)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for response in (await http.get("/.well-known/jmap", headers=PROXY_MINE),
                             await http.post("/jmap", headers=PROXY_MINE, json={"using": USING, "methodCalls": [
                                 ["Mailbox/get", {"accountId": ACCOUNT}, "0"]]})):
                assert response.status_code == 503
                assert response.headers["content-type"].startswith("application/problem+json")
                problem = response.json()
                assert problem["status"] == 503 and url in problem["detail"], problem
    finally:
        await _stop(server, task)


async def test_stalwart_shaped_ids_are_mapped_both_ways(make_config: Callable[..., ApplianceConfig],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Stalwart's account ids are its own (``b``, ``c``); its URLs carry its public name."""
    seen: list[dict[str, Any]] = []
    session = {"capabilities": {"urn:ietf:params:jmap:core": {}, "urn:ietf:params:jmap:mail": {}},
               "accounts": {"b": {"name": AGENT, "accountCapabilities": {"urn:ietf:params:jmap:mail": {}}},
                            "c": {"name": "shared@example.org", "accountCapabilities": {}}},
               "primaryAccounts": {"urn:ietf:params:jmap:mail": "b"}, "username": AGENT,
               "apiUrl": "https://mail.example.org/jmap/", "state": "s1",
               "uploadUrl": "https://mail.example.org/jmap/upload/{accountId}/",
               "downloadUrl": "https://mail.example.org/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
               "eventSourceUrl": "https://mail.example.org/jmap/eventsource/?types={types}&closeafter={closeafter}"
                                 "&ping={ping}"}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1"  # rebased onto jmap_url, not the public name
        assert request.headers["authorization"] == "Bearer jmap-agent-key"
        if request.url.path == "/.well-known/jmap":
            return httpx.Response(307, headers={"location": "/jmap/session"})
        if request.url.path == "/jmap/session":
            return httpx.Response(200, json=session)
        body = msgspec.json.decode(request.content)
        seen.append(body)
        return httpx.Response(200, json={"sessionState": "s1", "methodResponses": [
            [name, {"accountId": args["accountId"], "list": [], "state": "1"}, cid]
            for name, args, cid in body["methodCalls"]]})

    config = proxy_config(make_config, monkeypatch, "http://127.0.0.1:9", tmp_path)
    runtime = Runtime(config)
    await runtime.start()
    try:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            service = for_runtime(SimpleNamespace(runtime=runtime))
            proxy = JmapProxy(client, upstream_from_config(config), service, SessionCache())
            who = proxy.caller(AGENT)
            ours = await proxy.session(who, "https://appliance.example")
            assert list(ours["accounts"]) == [ACCOUNT]
            assert ours["primaryAccounts"]["urn:ietf:params:jmap:mail"] == ACCOUNT
            assert ours["apiUrl"] == "https://appliance.example/api/v1/jmap"
            answered = await proxy.api(who, msgspec.json.encode({"using": USING, "methodCalls": [
                ["Mailbox/get", {"accountId": ACCOUNT}, "0"], ["Mailbox/get", {"accountId": "c"}, "1"]]}))
    finally:
        await runtime.stop()
    assert seen[0]["methodCalls"] == [["Mailbox/get", {"accountId": "b"}, "0"]]
    assert answered["methodResponses"] == [["Mailbox/get", {"accountId": ACCOUNT, "list": [], "state": "1"}, "0"],
                                           ["error", {"type": "accountNotFound"}, "1"]]


def test_upstream_credentials_basic_or_bearer(make_config: Callable[..., ApplianceConfig],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = proxy_config(make_config, monkeypatch, "http://127.0.0.1:8080/", tmp_path)
    upstream: Upstream = upstream_from_config(config, {"TEST_UPSTREAM_ADMIN": "hunter2", "TEST_UPSTREAM_AGENT":
                                                       "API_abc", "TEST_UPSTREAM_OTHER": "Bearer tok"})
    assert upstream.jmap_url == "http://127.0.0.1:8080"
    assert upstream.admin.header == "Basic YWRtaW46aHVudGVyMg=="  # admin:hunter2
    assert upstream.agents[AGENT].header == "Bearer API_abc"
    assert upstream.agents[OTHER_AGENT].header == "Bearer tok"

