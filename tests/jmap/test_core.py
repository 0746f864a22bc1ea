"""RFC 8620 core: the Session, request-level and method-level errors, result references, creation ids, limits."""

from __future__ import annotations

import asyncio
import json

import duckdb
from litestar.testing import AsyncTestClient

from tests.conftest import AGENT, OTHER_AGENT
from tests.jmap.conftest import (
    ACCOUNT,
    ADMIN,
    MINE,
    OTHER_ACCOUNT,
    THEIRS,
    USING,
    call,
    deliver,
    jmap,
    message,
    runtime_of,
)


async def test_the_session_names_the_callers_accounts_and_the_urls(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    mine = (await client.get("/.well-known/jmap", headers=MINE)).json()
    assert set(mine["accounts"]) == {ACCOUNT}
    assert mine["accounts"][ACCOUNT]["name"] == AGENT and mine["username"] == AGENT
    assert mine["primaryAccounts"]["urn:ietf:params:jmap:mail"] == ACCOUNT
    assert set(mine["capabilities"]) == set(USING)
    core = mine["capabilities"]["urn:ietf:params:jmap:core"]
    assert {"maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest", "maxConcurrentRequests", "maxCallsInRequest",
            "maxObjectsInGet", "maxObjectsInSet", "collationAlgorithms"} <= set(core)
    assert mine["apiUrl"].endswith("/api/v1/jmap")
    assert mine["downloadUrl"].endswith("/download/{accountId}/{blobId}/{name}?accept={type}")
    assert mine["uploadUrl"].endswith("/upload/{accountId}")
    assert mine["eventSourceUrl"].endswith("?types={types}&closeafter={closeafter}&ping={ping}")
    assert (await client.get("/api/v1/jmap/session", headers=MINE)).json()["state"] == mine["state"]
    admin = (await client.get("/.well-known/jmap", headers=ADMIN)).json()
    assert set(admin["accounts"]) == {ACCOUNT, OTHER_ACCOUNT} and admin["username"] == "admin"
    assert admin["state"] != mine["state"]


async def test_no_key_no_session(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/.well-known/jmap")).status_code == 401
    assert (await client.get("/.well-known/jmap", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/api/v1/jmap", content=b"{}", headers={"Authorization": "Bearer nope"})
            ).status_code == 401


async def test_core_echo_rfc8620_4_1(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    body = await jmap(client, [["Core/echo", {"hello": True, "high": 5}, "b3ff"]], using=["urn:ietf:params:jmap:core"])
    assert body["methodResponses"] == [["Core/echo", {"hello": True, "high": 5}, "b3ff"]]
    assert isinstance(body["sessionState"], str)
    assert "createdIds" not in body


def problem(response: object) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/problem+json")
    data: dict[str, object] = response.json()
    return data


async def test_request_level_errors_are_problem_details_rfc8620_3_6_1(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    not_json = await client.post("/api/v1/jmap", content=b"{nope", headers={**MINE, "content-type": "application/json"})
    assert not_json.status_code == 400
    assert problem(not_json)["type"] == "urn:ietf:params:jmap:error:notJSON"
    wrong_type = await client.post("/api/v1/jmap", content=b"{}", headers={**MINE, "content-type": "text/plain"})
    assert problem(wrong_type)["type"] == "urn:ietf:params:jmap:error:notJSON"
    not_request = await client.post("/api/v1/jmap", json={"using": [], "methodCalls": "no"}, headers=MINE)
    assert problem(not_request)["type"] == "urn:ietf:params:jmap:error:notRequest"
    unknown = await client.post("/api/v1/jmap", json={"using": ["https://example.com/apis/foobar"],
                                                      "methodCalls": []}, headers=MINE)
    assert unknown.status_code == 400
    assert problem(unknown) | {"detail": ""} == {"type": "urn:ietf:params:jmap:error:unknownCapability",
                                                 "status": 400, "detail": ""}


async def test_limits_are_enforced(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    service_limits = (await client.get("/.well-known/jmap", headers=MINE)).json()["capabilities"][
        "urn:ietf:params:jmap:core"]
    calls = [["Core/echo", {}, f"c{i}"] for i in range(service_limits["maxCallsInRequest"] + 1)]
    too_many = await client.post("/api/v1/jmap", json={"using": USING, "methodCalls": calls}, headers=MINE)
    assert problem(too_many) | {"detail": ""} == {"type": "urn:ietf:params:jmap:error:limit", "status": 400,
                                                  "limit": "maxCallsInRequest", "detail": ""}
    big = json.dumps({"using": USING, "methodCalls": [["Core/echo", {"x": "y" * service_limits["maxSizeRequest"]},
                                                       "c"]]})
    too_big = await client.post("/api/v1/jmap", content=big.encode(), headers={**MINE,
                                                                             "content-type": "application/json"})
    assert too_big.status_code == 400 and problem(too_big)["limit"] == "maxSizeRequest"
    ids = [f"x{i}" for i in range(service_limits["maxObjectsInGet"] + 1)]
    name, answer = await call(client, "Email/get", {"ids": ids})
    assert (name, answer["type"]) == ("error", "requestTooLarge")
    destroy = [f"x{i}" for i in range(service_limits["maxObjectsInSet"] + 1)]
    name, answer = await call(client, "Email/set", {"destroy": destroy})
    assert (name, answer["type"]) == ("error", "requestTooLarge")


async def test_concurrent_requests_over_the_limit_are_refused(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    service = client.app.state.jmap_service if hasattr(client.app.state, "jmap_service") else None
    await call(client, "Core/echo", {})
    service = client.app.state.jmap_service
    service.inflight["agent@example.test"] = service.limits.max_concurrent_requests
    try:
        busy = await client.post("/api/v1/jmap", json={"using": USING, "methodCalls": []}, headers=MINE)
        assert busy.status_code == 429 and problem(busy)["limit"] == "maxConcurrentRequests"
        other = await client.post("/api/v1/jmap", json={"using": USING, "methodCalls": []}, headers=THEIRS)
        assert other.status_code == 200  # the limit is per caller
    finally:
        service.inflight["agent@example.test"] = 0


async def test_method_level_errors(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    body = await jmap(client, [["Nope/get", {}, "a"], ["Email/get", {"accountId": ACCOUNT, "ids": 5}, "b"],
                               ["Email/get", {"accountId": ACCOUNT, "properties": ["nope"]}, "c"],
                               ["Mailbox/get", {"accountId": ACCOUNT}, "d"]],
                      using=["urn:ietf:params:jmap:core"])
    types = [(r[0], r[1].get("type"), r[2]) for r in body["methodResponses"]]
    assert types == [("error", "unknownMethod", "a"), ("error", "unknownMethod", "b"),
                     ("error", "unknownMethod", "c"), ("error", "unknownMethod", "d")]  # mail not in using
    body = await jmap(client, [["Email/get", {"accountId": ACCOUNT, "ids": 5}, "b"],
                               ["Email/get", {"accountId": ACCOUNT, "ids": [], "properties": ["nope"]}, "c"],
                               ["Email/changes", {"accountId": ACCOUNT, "sinceState": "bogus"}, "d"],
                               ["Email/query", {"accountId": ACCOUNT, "filter": {"nope": 1}}, "e"],
                               ["Email/query", {"accountId": ACCOUNT, "sort": [{"property": "nope"}]}, "f"],
                               ["Email/query", {"accountId": ACCOUNT, "anchor": "nope"}, "g"],
                               ["Email/set", {"accountId": ACCOUNT, "ifInState": "nope"}, "h"]])
    assert [r[1]["type"] for r in body["methodResponses"]] == [
        "invalidArguments", "invalidArguments", "cannotCalculateChanges", "unsupportedFilter", "unsupportedSort",
        "anchorNotFound", "stateMismatch"]


async def test_result_references_rfc8620_3_7(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    first = await deliver(client, message(subject="One", message_id="<one@example.net>"))
    second = await deliver(client, message(subject="Re: One", message_id="<two@example.net>",
                                           in_reply_to="<one@example.net>"))
    third = await deliver(client, message(subject="Other", message_id="<three@example.net>"))
    body = await jmap(client, [
        ["Email/query", {"accountId": ACCOUNT, "filter": {"inMailbox": "inbox"},
                         "sort": [{"property": "receivedAt", "isAscending": False}], "collapseThreads": True,
                         "position": 0, "limit": 10, "calculateTotal": True}, "t0"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/ids"},
                       "properties": ["threadId"]}, "t1"],
        ["Thread/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t1", "name": "Email/get",
                                                        "path": "/list/*/threadId"}}, "t2"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t2", "name": "Thread/get",
                                                       "path": "/list/*/emailIds"},
                       "properties": ["from", "receivedAt", "subject"]}, "t3"]])
    query, emails, threads, full = (r[1] for r in body["methodResponses"])
    assert query["ids"] == [third, second] and query["total"] == 2  # one per thread, newest first
    assert [t["emailIds"] for t in threads["list"]] == [[third], [first, second]]
    assert [e["subject"] for e in full["list"]] == ["Other", "One", "Re: One"]
    assert set(full["list"][0]) == {"id", "from", "receivedAt", "subject"}
    assert len(emails["list"]) == 2


async def test_bad_result_references(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    body = await jmap(client, [
        ["Email/query", {"accountId": ACCOUNT}, "t0"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t9", "name": "Email/query", "path": "/ids"}}, "a"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t0", "name": "Email/get", "path": "/ids"}}, "b"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "t0", "name": "Email/query", "path": "/nope"}}, "c"],
        ["Email/get", {"accountId": ACCOUNT, "ids": [], "#ids": {"resultOf": "t0", "name": "Email/query",
                                                                  "path": "/ids"}}, "d"]])
    assert [r[1].get("type") for r in body["methodResponses"][1:]] == [
        "invalidResultReference", "invalidResultReference", "invalidResultReference", "invalidArguments"]


async def test_creation_ids_across_calls_and_created_ids(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    body = await jmap(client, [
        ["Mailbox/set", {"accountId": ACCOUNT, "create": {"m1": {"name": "Projects"}}}, "a"],
        ["Mailbox/set", {"accountId": ACCOUNT, "create": {"m2": {"name": "Alpha", "parentId": "#m1"}}}, "b"],
        ["Email/set", {"accountId": ACCOUNT, "create": {"e1": {
            "mailboxIds": {"#m2": True}, "keywords": {"$draft": True}, "subject": "Plan",
            "from": [{"name": "Agent", "email": AGENT}], "to": [{"email": "bob@example.net"}],
            "bodyValues": {"b": {"value": "The plan."}}, "textBody": [{"partId": "b", "type": "text/plain"}]}}},
         "c"],
        ["Email/get", {"accountId": ACCOUNT, "ids": ["#e1"], "properties": ["mailboxIds", "subject"]}, "d"]],
        createdIds={"x": "given"})
    created = body["createdIds"]
    assert created["x"] == "given" and {"m1", "m2", "e1"} <= set(created)
    boxes = body["methodResponses"][1][1]["created"]
    assert body["methodResponses"][3][1]["list"] == [{"id": created["e1"], "mailboxIds": {boxes["m2"]["id"]: True},
                                                      "subject": "Plan"}]


async def test_another_account_is_not_found_and_audited(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    for account in (OTHER_ACCOUNT, "Anonexistent", ACCOUNT + "x"):
        name, answer = await call(client, "Mailbox/get", {}, account=account)
        assert (name, answer) == ("error", {"type": "accountNotFound"})
    name, answer = await call(client, "Mailbox/get", {}, headers=ADMIN, account=OTHER_ACCOUNT)
    assert name == "Mailbox/get"
    name, answer = await call(client, "Mailbox/get", {}, headers=THEIRS, account=OTHER_ACCOUNT)
    assert name == "Mailbox/get"
    runtime = runtime_of(client)

    def events(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
        rows = con.execute("SELECT type, agent, detail FROM events WHERE type = 'jmap.account_denied'").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    audited = await runtime.db.read(events)
    assert len(audited) == 3 and all(a == ("jmap.account_denied", AGENT, a[2]) for a in audited)
    assert OTHER_AGENT not in " ".join(d for _, _, d in audited)


async def test_requests_run_concurrently(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answers = await asyncio.gather(*(call(client, "Core/echo", {"n": i}) for i in range(5)))
    assert [a[1]["n"] for a in answers] == list(range(5))
