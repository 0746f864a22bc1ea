"""Limits and hygiene of the HTTP API: bad input is a clear 4xx, bodies are bounded per route and read
only after the caller is known, and error replies never echo unbounded input."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from appliance.app import ERROR_QUOTE_LIMIT, JSON_BODY_LIMIT, message_body_limit
from appliance.config import ApplianceConfig
from tests.api.conftest import ADMIN, AGENT_KEY
from tests.api.server import Served, serve

HOOK_SECRET = {"Authorization": "Bearer hook-secret"}
NESTED = b"[" * 60_000  # under the body limit, far past any decoder's recursion limit

BAD_REQUESTS: list[tuple[str, str, str, dict[str, str], bytes | None]] = [
    ("quarantine limit -1", "GET", "/api/v1/quarantine/?limit=-1", ADMIN, None),
    ("quarantine limit 0", "GET", "/api/v1/quarantine/?limit=0", ADMIN, None),
    ("quarantine limit past BIGINT", "GET", "/api/v1/quarantine/?limit=" + "9" * 30, ADMIN, None),
    ("quarantine limit not a number", "GET", "/api/v1/quarantine/?limit=" + "x" * 5000, ADMIN, None),
    ("Last-Event-ID of 5,000 digits", "GET", "/api/v1/events", {**AGENT_KEY, "Last-Event-ID": "9" * 5000}, None),
    ("Last-Event-ID past BIGINT", "GET", "/api/v1/events", {**AGENT_KEY, "Last-Event-ID": "9" * 30}, None),
    ("Last-Event-ID of 1,000 letters", "GET", "/api/v1/events", {**AGENT_KEY, "Last-Event-ID": "m" * 1000}, None),
    ("lastEventId of 5,000 digits", "GET", "/api/v1/events?lastEventId=" + "9" * 5000, AGENT_KEY, None),
    ("usage: JSON nested 60,000 deep", "POST", "/api/v1/usage", AGENT_KEY, NESTED),
    ("usage: a nested value", "POST", "/api/v1/usage", AGENT_KEY, b'{"threadId": ' + NESTED + b"}"),
    ("introspect: JSON nested 60,000 deep", "POST", "/api/v1/tokens/introspect", AGENT_KEY, NESTED),
    ("audit sql: JSON nested 60,000 deep", "POST", "/api/v1/audit/sql", ADMIN, NESTED),
    ("hook: JSON nested 60,000 deep", "POST", "/hooks/mta", HOOK_SECRET, NESTED),
    ("a 10,000-character delivery id", "GET", "/api/v1/deliveries/" + "x" * 10_000, ADMIN, None),
    ("a 10,000-character quarantine id", "GET", "/api/v1/quarantine/" + "x" * 10_000, ADMIN, None),
    ("a 10,000-character message id", "GET", "/api/v1/messages/" + "x" * 10_000 + "/body", AGENT_KEY, None),
    ("usage: a 60 kB thread id", "POST", "/api/v1/usage", AGENT_KEY,
     b'{"threadId": "' + b"T" * 60_000 + b'", "tokens": 1}'),
]


@pytest.fixture
def hook_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APPLIANCE_HOOK_SECRET", "hook-secret")


@pytest.mark.parametrize(("what", "method", "url", "headers", "body"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_input_is_a_clear_4xx_that_quotes_little(
        client: AsyncTestClient, hook_secret: None, what: str, method: str, url: str,  # type: ignore[type-arg]
        headers: dict[str, str], body: bytes | None) -> None:
    answer = await client.request(method, url, headers={**headers, "content-type": "application/json"},
                                  content=body)
    assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    reply = answer.json()
    assert reply["detail"] and reply["detail"] != "Internal Server Error"
    assert len(answer.content) < 2 * ERROR_QUOTE_LIMIT + 600, f"{what}: a {len(answer.content)}-byte error reply"


async def test_an_unauthenticated_40_mb_body_is_a_401(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    huge = b"{" * 40_000_000
    for url in ("/api/v1/usage", "/api/v1/tokens/introspect", "/api/v1/audit/sql", "/hooks/mta"):
        answer = await client.post(url, content=huge, headers={"content-type": "application/json"})
        assert answer.status_code == 401, (url, answer.status_code, answer.text[:200])


async def test_bodies_are_limited_per_route(client: AsyncTestClient, hook_secret: None) -> None:  # type: ignore[type-arg]
    over = b'{"threadId": "' + b"T" * JSON_BODY_LIMIT + b'", "tokens": 1}'
    for url, key in (("/api/v1/usage", AGENT_KEY), ("/api/v1/tokens/introspect", AGENT_KEY),
                     ("/api/v1/audit/sql", ADMIN)):
        answer = await client.post(url, content=over, headers={**key, "content-type": "application/json"})
        assert answer.status_code == 413, (url, answer.status_code)
    # The MTA hook carries a whole message: a body far over the JSON limit is read (and judged) ...
    message_sized = b'{"context": {}, "junk": "' + b"m" * 2_000_000 + b'"}'
    answer = await client.post("/hooks/mta", content=message_sized,
                               headers={**HOOK_SECRET, "content-type": "application/json"})
    assert answer.status_code == 400 and "not an MTA hook request" in answer.json()["detail"]
    # ... up to its own limit.
    config = client.app.state.runtime.config
    too_big = b"{" * (message_body_limit(config) + 1)
    answer = await client.post("/hooks/mta", content=too_big,
                               headers={**HOOK_SECRET, "content-type": "application/json"})
    assert answer.status_code == 413


# -- over a real socket: the answer comes before the body is sent ----------------------------------------


@pytest.fixture
def served(make_config: Callable[..., ApplianceConfig], monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("TEST_APPLIANCE_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("TEST_AGENT_KEY", "agent-key")
    config = make_config()
    first = msgspec.structs.replace(config.agents[0], api_key_env="TEST_AGENT_KEY")
    with serve(msgspec.structs.replace(config, agents=[first, *config.agents[1:]])) as app:
        yield app


def _head_only(served: Served, path: str, headers: dict[str, str], length: int) -> tuple[int, float]:
    """Send a request head announcing ``length`` bytes of body, and no body: (status, seconds to answer)."""
    port = int(served.url.rsplit(":", 1)[1])
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = conn.recv(4096)
            assert chunk, "connection closed without an answer"
            answer += chunk
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


def test_the_caller_is_checked_before_a_byte_of_the_body_is_read(served: Served) -> None:
    # Were the body read first, the server would wait for 40 MB that never come (the socket times out).
    for path in ("/api/v1/usage", "/api/v1/tokens/introspect", "/api/v1/audit/sql", "/hooks/mta"):
        status, took = _head_only(served, path, {}, 40_000_000)
        assert status == 401 and took < 2, (path, status, took)
    # A known caller announcing too much is refused on the announcement alone.
    status, took = _head_only(served, "/api/v1/usage", {"Authorization": "Bearer agent-key"}, 40_000_000)
    assert status == 413 and took < 2
    assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200  # and the server is fine
