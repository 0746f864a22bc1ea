"""RFC 8621 Mailbox, Thread, SearchSnippet and Identity."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import AGENT
from tests.jmap.conftest import call, deliver, message


async def _set(client: AsyncTestClient, **args: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    name, answer = await call(client, "Mailbox/set", args)
    assert name == "Mailbox/set", answer
    return answer


async def test_role_mailboxes(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    _, answer = await call(client, "Mailbox/get", {"ids": None, "properties": ["name", "role"]})
    assert [(m["id"], m["name"], m["role"]) for m in answer["list"]] == [
        ("inbox", "Inbox", "inbox"), ("drafts", "Drafts", "drafts"), ("sent", "Sent", "sent"),
        ("archive", "Archive", "archive"), ("trash", "Trash", "trash")]
    answer = await _set(client, destroy=["inbox"], update={"trash": {"role": "junk"}})
    assert answer["notDestroyed"]["inbox"]["type"] == "forbidden"
    assert answer["notUpdated"]["trash"]["properties"] == ["role"]
    answer = await _set(client, update={"archive": {"name": "Kept", "sortOrder": 9}})
    assert answer["updated"] == {"archive": None}


async def test_custom_mailboxes(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    answer = await _set(client, create={
        "a": {"name": "Clients"}, "b": {"name": "Acme", "parentId": "#a"}, "c": {"name": "Clients"},
        "d": {"name": ""}, "e": {"name": "x", "role": "inbox"}, "f": {"name": "y", "totalEmails": 3},
        "g": {"name": "z", "parentId": "nope"}})
    assert set(answer["created"]) == {"a", "b"}
    assert {k: v["properties"] for k, v in answer["notCreated"].items()} == {
        "c": ["name"], "d": ["name"], "e": ["role"], "f": ["totalEmails"], "g": ["parentId"]}
    clients, acme = answer["created"]["a"]["id"], answer["created"]["b"]["id"]
    assert answer["created"]["a"]["totalEmails"] == 0 and answer["created"]["a"]["myRights"]["mayDelete"]
    answer = await _set(client, update={clients: {"parentId": acme}})
    assert answer["notUpdated"][clients]["properties"] == ["parentId"]  # a cycle
    email_id = await deliver(client, message())
    await call(client, "Email/set", {"update": {email_id: {f"mailboxIds/{acme}": True}}})
    answer = await _set(client, destroy=[clients])
    assert answer["notDestroyed"][clients]["type"] == "mailboxHasChild"
    answer = await _set(client, destroy=[acme])
    assert answer["notDestroyed"][acme]["type"] == "mailboxHasEmail"
    answer = await _set(client, destroy=[acme, clients], onDestroyRemoveEmails=True)
    assert sorted(answer["destroyed"]) == sorted([acme, clients])
    _, got = await call(client, "Email/get", {"ids": [email_id], "properties": ["mailboxIds"]})
    assert got["list"][0]["mailboxIds"] == {"inbox": True}  # still in the inbox: only removed from Acme
    only = await _set(client, create={"o": {"name": "Only"}})
    only_id = only["created"]["o"]["id"]
    await call(client, "Email/set", {"update": {email_id: {"mailboxIds": {only_id: True}}}})
    await _set(client, destroy=[only_id], onDestroyRemoveEmails=True)
    _, got = await call(client, "Email/get", {"ids": [email_id]})
    assert got["notFound"] == [email_id]  # its only mailbox went: so did it


async def test_mailbox_changes_say_when_only_counts_changed(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    _, before = await call(client, "Mailbox/get", {"ids": []})
    await deliver(client, message())
    _, answer = await call(client, "Mailbox/changes", {"sinceState": before["state"]})
    assert answer["updated"] == ["inbox"] and answer["updatedProperties"] == [
        "totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
    await _set(client, update={"inbox": {"sortOrder": 0}})
    _, answer = await call(client, "Mailbox/changes", {"sinceState": before["state"]})
    assert answer["updated"] == ["inbox"] and answer["updatedProperties"] is None
    created = await _set(client, create={"n": {"name": "New"}})
    _, answer = await call(client, "Mailbox/changes", {"sinceState": created["oldState"]})
    assert answer["created"] == [created["created"]["n"]["id"]] and answer["updated"] == []


async def test_mailbox_query(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    made = await _set(client, create={"p": {"name": "Zeta", "sortOrder": 0}, "c": {"name": "Alpha", "parentId": "#p"},
                                      "q": {"name": "Beta", "sortOrder": 0, "isSubscribed": False}})
    p, c, q = (made["created"][k]["id"] for k in "pcq")
    _, answer = await call(client, "Mailbox/query", {"filter": {"hasAnyRole": False},
                                                        "sort": [{"property": "name"}], "calculateTotal": True})
    assert answer["ids"] == [c, q, p] and answer["total"] == 3
    _, answer = await call(client, "Mailbox/query", {"filter": {"hasAnyRole": False}, "sortAsTree": True,
                                                        "sort": [{"property": "name"}]})
    assert answer["ids"] == [q, p, c]
    _, answer = await call(client, "Mailbox/query", {"filter": {"name": "ALPHA"}})
    assert answer["ids"] == [c]
    _, answer = await call(client, "Mailbox/query", {"filter": {"operator": "OR", "conditions": [
        {"name": "alpha"}, {"isSubscribed": False}]}, "filterAsTree": True})
    assert answer["ids"] == [q]  # Alpha's parent Zeta does not match
    _, answer = await call(client, "Mailbox/query", {"filter": {"role": "inbox"}})
    assert answer["ids"] == ["inbox"]
    state = answer["queryState"]
    await _set(client, update={q: {"isSubscribed": True}})
    _, answer = await call(client, "Mailbox/queryChanges", {"sinceQueryState": state,
                                                               "filter": {"isSubscribed": False}})
    assert answer["removed"] == [q] and answer["added"] == []


async def test_threads(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    first = await deliver(client, message(message_id="<x1@example.net>"))
    second = await deliver(client, message(subject="Re: Report", in_reply_to="<x1@example.net>"))
    _, got = await call(client, "Email/get", {"ids": [first, second], "properties": ["threadId"]})
    thread = got["list"][0]["threadId"]
    assert got["list"][1]["threadId"] == thread
    _, answer = await call(client, "Thread/get", {"ids": [thread, "Tnope"]})
    assert answer["list"] == [{"id": thread, "emailIds": [first, second]}] and answer["notFound"] == ["Tnope"]
    state = answer["state"]
    third = await deliver(client, message(subject="Re: Report", in_reply_to="<x1@example.net>"))
    _, answer = await call(client, "Thread/changes", {"sinceState": state})
    assert answer["updated"] == [thread] and answer["created"] == []
    await call(client, "Email/set", {"destroy": [first, second, third]})
    _, answer = await call(client, "Thread/changes", {"sinceState": state})
    assert answer["destroyed"] == [thread]


async def test_search_snippets(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message(subject="Budget <draft>", text="The budget for Q3 is attached."))
    _, answer = await call(client, "SearchSnippet/get", {"filter": {"text": "budget"},
                                                            "emailIds": [email_id, "nope"]})
    assert answer["list"] == [{"emailId": email_id, "subject": "<mark>Budget</mark> &lt;draft&gt;",
                               "preview": "The <mark>budget</mark> for Q3 is attached."}]
    assert answer["notFound"] == ["nope"]
    _, answer = await call(client, "SearchSnippet/get", {"filter": {"subject": "nothing"},
                                                            "emailIds": [email_id]})
    assert answer["list"] == [{"emailId": email_id, "subject": None, "preview": None}]


async def test_identity(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    _, answer = await call(client, "Identity/get", {"ids": None})
    identity = answer["list"][0]
    assert identity["email"] == AGENT and identity["mayDelete"] is False
    _, changes = await call(client, "Identity/changes", {"sinceState": answer["state"]})
    assert changes["updated"] == [] and changes["newState"] == answer["state"]
    _, changes = await call(client, "Identity/changes", {"sinceState": "old"})
    assert changes["updated"] == [identity["id"]]
    _, answer = await call(client, "Identity/set", {"create": {"i": {"email": "boss@acme.com"}}})
    assert answer["notCreated"]["i"]["type"] == "forbidden"
