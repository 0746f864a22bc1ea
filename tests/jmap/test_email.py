"""RFC 8621 Email: get (properties, body parts, body values, header forms), query, set, import, the gate's view."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from tests.conftest import AGENT
from tests.jmap.conftest import ACCOUNT, MINE, USING, call, deliver, jmap, message

PDF = b"%PDF-1.4 fake pdf bytes \x00\x01\x02"
HTML = "<html><body><p>Hello <b>there</b>, see <a href='https://example.net/x'>this</a></p></body></html>"


async def _one(client: AsyncTestClient, **args: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    name, answer = await call(client, "Email/get", args)
    assert name == "Email/get", answer
    assert len(answer["list"]) == 1, answer
    found: dict[str, Any] = answer["list"][0]
    return found


async def test_email_get_rfc8621_4_10_example(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message(text="Plain words", html=HTML, attachment=PDF,
                                             message_id="<report@example.net>",
                                             extra={"List-Post": "<mailto:list@example.net>",
                                                    "Date": "Tue, 02 Jan 2024 10:00:00 +0100"}))
    got = await _one(client, ids=[email_id], properties=[
        "threadId", "mailboxIds", "from", "subject", "receivedAt", "header:List-POST:asURLs", "htmlBody",
        "bodyValues"], bodyProperties=["partId", "blobId", "size", "type"], fetchHTMLBodyValues=True,
        maxBodyValueBytes=20)
    assert set(got) == {"id", "threadId", "mailboxIds", "from", "subject", "receivedAt", "header:List-POST:asURLs",
                        "htmlBody", "bodyValues"}
    assert got["mailboxIds"] == {"inbox": True}
    assert got["from"] == [{"name": "Alice", "email": "alice@example.net"}]
    assert got["header:List-POST:asURLs"] == ["mailto:list@example.net"]
    assert [p["type"] for p in got["htmlBody"]] == ["text/html"]
    html_part = got["htmlBody"][0]
    assert set(html_part) == {"partId", "blobId", "size", "type"}
    value = got["bodyValues"][html_part["partId"]]
    assert value["isTruncated"] is True and len(value["value"].encode()) <= 20 and not value["value"].endswith("<")
    assert value["isEncodingProblem"] is False


async def test_email_get_default_properties_and_body_parts(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message(text="Plain words", html=HTML, attachment=PDF,
                                             message_id="<report@example.net>",
                                             extra={"Date": "Tue, 02 Jan 2024 10:00:00 +0100"}))
    got = await _one(client, ids=[email_id])
    assert set(got) == {"id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
                        "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
                        "sentAt", "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments"}
    assert got["messageId"] == ["report@example.net"] and got["inReplyTo"] is None
    assert got["sentAt"] == "2024-01-02T10:00:00+01:00" and got["receivedAt"].endswith("Z")
    assert got["to"] == [{"name": None, "email": AGENT}]
    assert got["hasAttachment"] is True and got["preview"] == "Plain words"
    assert got["bodyValues"] == {}  # none asked for
    assert [p["type"] for p in got["textBody"]] == ["text/plain"]
    assert [p["type"] for p in got["htmlBody"]] == ["text/html"]
    assert [(p["type"], p["name"], p["disposition"], p["size"]) for p in got["attachments"]] == [
        ("application/pdf", "report.pdf", "attachment", len(PDF))]
    structure = (await _one(client, ids=[email_id], properties=["bodyStructure"]))["bodyStructure"]
    assert structure["type"] == "multipart/mixed" and structure["partId"] is None and structure["blobId"] is None
    assert [p["type"] for p in structure["subParts"]] == ["multipart/alternative", "application/pdf"]
    blob = (await client.get(f"/api/v1/jmap/download/{ACCOUNT}/{got['attachments'][0]['blobId']}/report.pdf",
                             params={"accept": "application/pdf"}, headers=MINE))
    assert blob.status_code == 200 and blob.content == PDF
    assert blob.headers["content-type"] == "application/pdf"
    assert blob.headers["content-disposition"].startswith("attachment")
    whole = await client.get(f"/api/v1/jmap/download/{ACCOUNT}/{got['blobId']}/m.eml", headers=MINE)
    assert whole.content.startswith(b"Authentication-Results:") and b"Subject: Report" in whole.content
    assert len(whole.content) == got["size"]


async def test_body_values_flags(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message(text="Plain words\r\nline two", html=HTML))
    text = await _one(client, ids=[email_id], properties=["bodyValues", "textBody"], fetchTextBodyValues=True)
    assert list(text["bodyValues"].values()) == [{"value": "Plain words\nline two\n", "isEncodingProblem": False,
                                                  "isTruncated": False}]
    both = await _one(client, ids=[email_id], properties=["bodyValues"], fetchAllBodyValues=True)
    assert len(both["bodyValues"]) == 2
    html = await _one(client, ids=[email_id], properties=["bodyValues"], fetchHTMLBodyValues=True)
    assert "<b>there</b>" in next(iter(html["bodyValues"].values()))["value"]
    cut = await _one(client, ids=[email_id], properties=["bodyValues"], fetchTextBodyValues=True,
                     maxBodyValueBytes=5)
    assert next(iter(cut["bodyValues"].values())) == {"value": "Plain", "isEncodingProblem": False,
                                                      "isTruncated": True}


async def test_header_forms(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message(
        subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=", message_id="<m1@example.net>",
        extra={"Cc": "Team: a@example.net, B <b@example.net>;, c@example.net", "X-Tag": "one",
               "Date": "Wed, 03 Jan 2024 09:30:00 -0500", "List-Unsubscribe": "<mailto:u@example.net>, <https://u>"}))
    got = await _one(client, ids=[email_id], properties=[
        "header:Subject", "header:Subject:asText", "header:Cc:asAddresses", "header:Cc:asGroupedAddresses",
        "header:Message-ID:asMessageIds", "header:Date:asDate", "header:List-Unsubscribe:asURLs", "header:x-tag:all",
        "header:X-Missing", "header:X-Missing:all", "headers", "subject"])
    assert got["header:Subject"] == " =?utf-8?q?Gr=C3=BC=C3=9Fe?="
    assert got["header:Subject:asText"] == got["subject"] == "Grüße"
    assert got["header:Cc:asAddresses"] == [{"name": None, "email": "a@example.net"},
                                            {"name": "B", "email": "b@example.net"},
                                            {"name": None, "email": "c@example.net"}]
    assert got["header:Cc:asGroupedAddresses"] == [
        {"name": "Team", "addresses": [{"name": None, "email": "a@example.net"}, {"name": "B",
                                                                                   "email": "b@example.net"}]},
        {"name": None, "addresses": [{"name": None, "email": "c@example.net"}]}]
    assert got["header:Message-ID:asMessageIds"] == ["m1@example.net"]
    assert got["header:Date:asDate"] == "2024-01-03T09:30:00-05:00"
    assert got["header:List-Unsubscribe:asURLs"] == ["mailto:u@example.net", "https://u"]
    assert got["header:x-tag:all"] == [" one"]
    assert got["header:X-Missing"] is None and got["header:X-Missing:all"] == []
    assert {"name": "X-Tag", "value": " one"} in got["headers"]
    assert got["headers"][0]["name"] == "Authentication-Results"  # the stored copy, trace header first
    name, answer = await call(client, "Email/get", {"ids": [email_id], "properties": ["header:From:asDate"]})
    assert (name, answer["type"]) == ("error", "invalidArguments")  # RFC 8621 4.1.2: From is not a Date


async def test_quarantined_mail_is_not_the_agents(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    held = await deliver(client, message("mallory@held.example"), sender="mallory@held.example")
    assert held is not None
    _, answer = await call(client, "Email/query", {})
    assert answer["ids"] == []
    _, answer = await call(client, "Email/get", {"ids": [held]})
    assert answer["list"] == [] and answer["notFound"] == [held]
    _, answer = await call(client, "Mailbox/get", {"ids": ["inbox"]})
    assert answer["list"][0]["totalEmails"] == 0


async def test_gate_view_needs_the_vendor_capability(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message())
    got = await _one(client, ids=[email_id], properties=["urn:appliance:jmap:gate"])
    gate = got["urn:appliance:jmap:gate"]
    assert gate["action"] == "accept" and gate["capabilities"] == ["read"] and gate["rule"] == 0
    assert set(gate["authResults"]) == {"spf", "dkim", "dmarc"} and gate["decisionId"].startswith("d")
    assert gate["capabilityToken"].startswith("eyJ")
    body = await jmap(client, [["Email/get", {"accountId": ACCOUNT, "ids": [email_id],
                                              "properties": ["urn:appliance:jmap:gate"]}, "a"]], using=USING[:2])
    assert body["methodResponses"][0][1]["type"] == "invalidArguments"


async def _query(client: AsyncTestClient, **args: Any) -> dict[str, Any]:  # type: ignore[type-arg]
    name, answer = await call(client, "Email/query", args)
    assert name == "Email/query", answer
    return answer


async def test_query_filters_and_sorts(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    a = await deliver(client, message(subject="Budget for Q3", text="numbers inside", message_id="<a@example.net>"))
    b = await deliver(client, message("bob@example.net", subject="Lunch", text="pizza friday " * 50,
                                      attachment=PDF, extra={"X-Priority": "1"}), sender="bob@example.net")
    c = await deliver(client, message(subject="Re: Budget for Q3", text="agreed", in_reply_to="<a@example.net>",
                                      to=f"{AGENT}, carol@example.net"))  # the same sender: the same thread
    assert (await _query(client, filter={"text": "budget"}))["ids"] == [c, a]
    assert (await _query(client, filter={"text": "pizza friday"}))["ids"] == [b]
    assert (await _query(client, filter={"from": "bob@"}))["ids"] == [b]
    assert (await _query(client, filter={"to": AGENT}, sort=[{"property": "receivedAt"}]))["ids"] == [a, b, c]
    assert (await _query(client, filter={"subject": "lunch"}))["ids"] == [b]
    assert (await _query(client, filter={"body": "agreed"}))["ids"] == [c]
    assert (await _query(client, filter={"header": ["X-Priority"]}))["ids"] == [b]
    assert (await _query(client, filter={"header": ["x-priority", "1"]}))["ids"] == [b]
    assert (await _query(client, filter={"header": ["X-Priority", "2"]}))["ids"] == []
    assert (await _query(client, filter={"hasAttachment": True}))["ids"] == [b]
    assert (await _query(client, filter={"operator": "NOT", "conditions": [{"hasAttachment": True}]}))["ids"] == [c, a]
    assert (await _query(client, filter={"operator": "OR", "conditions": [{"from": "bob"}, {"to": "carol"}]})
            )["ids"] == [c, b]
    assert (await _query(client, sort=[{"property": "size", "isAscending": False}]))["ids"][0] == b
    assert (await _query(client, sort=[{"property": "to"}, {"property": "receivedAt"}]))["ids"] == [a, b, c]
    assert (await _query(client, sort=[{"property": "subject"}, {"property": "receivedAt"}]))["ids"] == [a, c, b]
    got = await _one(client, ids=[b], properties=["receivedAt"])
    assert (await _query(client, filter={"before": got["receivedAt"]}))["ids"] == [a]
    assert (await _query(client, filter={"after": got["receivedAt"]}))["ids"] == [c, b]
    await call(client, "Email/set", {"update": {a: {"keywords/$flagged": True}}})
    assert (await _query(client, filter={"hasKeyword": "$flagged"}))["ids"] == [a]
    assert (await _query(client, filter={"notKeyword": "$flagged"}))["ids"] == [c, b]
    assert (await _query(client, sort=[{"property": "hasKeyword", "keyword": "$flagged", "isAscending": False},
                                       {"property": "receivedAt"}]))["ids"] == [a, b, c]
    assert (await _query(client, filter={"someInThreadHaveKeyword": "$flagged"}))["ids"] == [c, a]
    assert (await _query(client, filter={"allInThreadHaveKeyword": "$flagged"}))["ids"] == []
    assert (await _query(client, filter={"inMailbox": "inbox"}, collapseThreads=True))["ids"] == [c, b]
    assert (await _query(client, filter={"noneInThreadHaveKeyword": "$flagged"}))["ids"] == [b]
    await call(client, "Email/set", {"update": {b: {"mailboxIds": {"archive": True}}}})
    assert (await _query(client, filter={"inMailbox": "archive"}))["ids"] == [b]
    assert (await _query(client, filter={"inMailboxOtherThan": ["inbox"]}))["ids"] == [b]
    assert (await _query(client, filter={"inMailbox": "inbox"}))["ids"] == [c, a]


async def test_query_windows(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    ids = [await deliver(client, message(subject=f"n{i}")) for i in range(6)]
    newest = list(reversed(ids))
    assert (await _query(client, position=2, limit=2, calculateTotal=True)) | {"queryState": ""} == {
        "accountId": ACCOUNT, "queryState": "", "canCalculateChanges": True, "position": 2, "ids": newest[2:4],
        "total": 6}
    assert (await _query(client, position=-2))["ids"] == newest[4:]
    answer = await _query(client, anchor=newest[3], anchorOffset=-1, limit=2)
    assert answer["position"] == 2 and answer["ids"] == newest[2:4]
    assert (await _query(client, anchor=newest[0], anchorOffset=-3))["position"] == 0
    assert (await _query(client, position=10))["ids"] == []
    many = await _query(client, limit=10**9)
    assert many["limit"] == 5000 and len(many["ids"]) == 6


async def test_set_keywords_and_mailboxes(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message())
    _, answer = await call(client, "Email/set", {"update": {email_id: {"keywords/$seen": True,
                                                                         "mailboxIds/archive": True}}})
    assert answer["updated"] == {email_id: None}, answer
    got = await _one(client, ids=[email_id], properties=["keywords", "mailboxIds"])
    assert got["keywords"] == {"$seen": True} and got["mailboxIds"] == {"inbox": True, "archive": True}
    await call(client, "Email/set", {"update": {email_id: {"mailboxIds": {"trash": True}, "keywords/$seen": None,
                                                           "keywords/$Flagged": True}}})
    got = await _one(client, ids=[email_id], properties=["keywords", "mailboxIds"])
    assert got == {"id": email_id, "keywords": {"$flagged": True}, "mailboxIds": {"trash": True}}
    _, answer = await call(client, "Email/set", {"update": {
        email_id: {"mailboxIds": {}}, "nope": {"keywords/$seen": True}}})
    assert answer["notUpdated"][email_id]["type"] == "invalidProperties"
    assert answer["notUpdated"]["nope"]["type"] == "notFound"
    _, answer = await call(client, "Email/set", {"update": {email_id: {"keywords": {"bad word": True}}}})
    assert answer["notUpdated"][email_id] == {"type": "invalidProperties", "properties": ["keywords"]}
    _, answer = await call(client, "Email/set", {"update": {email_id: {"keywords": {}, "keywords/$seen": True}}})
    assert answer["notUpdated"][email_id]["type"] == "invalidPatch"
    _, answer = await call(client, "Email/set", {"update": {email_id: {"subject": "changed"}}})
    assert answer["notUpdated"][email_id] == {"type": "invalidProperties", "properties": ["subject"],
                                              "description": "only mailboxIds and keywords change"}
    _, answer = await call(client, "Email/set", {"update": {email_id: {"mailboxIds/nosuchbox": True}}})
    assert answer["notUpdated"][email_id]["properties"] == ["mailboxIds"]


async def test_counts_follow_keywords_and_moves(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    first = await deliver(client, message(message_id="<t1@example.net>"))
    second = await deliver(client, message(subject="Re: Report", in_reply_to="<t1@example.net>"))

    async def counts() -> dict[str, tuple[int, int, int, int]]:
        _, answer = await call(client, "Mailbox/get", {"ids": ["inbox", "archive", "trash"]})
        return {m["id"]: (m["totalEmails"], m["unreadEmails"], m["totalThreads"], m["unreadThreads"])
                for m in answer["list"]}

    assert await counts() == {"inbox": (2, 2, 1, 1), "archive": (0, 0, 0, 0), "trash": (0, 0, 0, 0)}
    await call(client, "Email/set", {"update": {first: {"keywords/$seen": True}}})
    assert (await counts())["inbox"] == (2, 1, 1, 1)
    await call(client, "Email/set", {"update": {second: {"mailboxIds": {"archive": True}}}})
    # the unread email is in the archive now: the inbox's thread is still unread (RFC 8621 2)
    assert await counts() == {"inbox": (1, 0, 1, 1), "archive": (1, 1, 1, 1), "trash": (0, 0, 0, 0)}
    await call(client, "Email/set", {"update": {second: {"mailboxIds": {"trash": True}}}})
    assert await counts() == {"inbox": (1, 0, 1, 0), "archive": (0, 0, 0, 0), "trash": (1, 1, 1, 1)}


async def test_destroy(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    email_id = await deliver(client, message())
    _, answer = await call(client, "Email/set", {"destroy": [email_id, "nope"]})
    assert answer["destroyed"] == [email_id] and answer["notDestroyed"]["nope"]["type"] == "notFound"
    _, answer = await call(client, "Email/get", {"ids": [email_id]})
    assert answer["notFound"] == [email_id]
    gone = await client.get(f"/api/v1/messages/{email_id}/raw", headers=MINE)
    assert gone.status_code == 404  # the stored copy went with it
    _, answer = await call(client, "Thread/get", {"ids": None})
    assert answer["list"] == []


async def test_create_a_draft_and_import(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    parent = await deliver(client, message(message_id="<parent@example.net>"))
    upload = await client.post(f"/api/v1/jmap/upload/{ACCOUNT}", content=PDF,
                               headers={**MINE, "content-type": "application/pdf"})
    assert upload.status_code == 201, upload.text
    blob = upload.json()
    assert blob == {"accountId": ACCOUNT, "blobId": blob["blobId"], "type": "application/pdf", "size": len(PDF)}
    name, answer = await call(client, "Email/set", {"create": {"d1": {
        "mailboxIds": {"drafts": True}, "keywords": {"$draft": True, "$seen": True},
        "from": [{"name": "Agent Ü", "email": AGENT}], "to": [{"name": "Alice", "email": "alice@example.net"}],
        "subject": "Re: Report — ok", "inReplyTo": ["parent@example.net"], "references": ["parent@example.net"],
        "header:X-Agent:asText": "draft one",
        "bodyValues": {"t": {"value": "Text body"}, "h": {"value": "<p>HTML body</p>"}},
        "textBody": [{"partId": "t", "type": "text/plain"}], "htmlBody": [{"partId": "h", "type": "text/html"}],
        "attachments": [{"blobId": blob["blobId"], "type": "application/pdf", "name": "plan.pdf"}]}}})
    assert name == "Email/set", answer
    created = answer["created"]["d1"]
    assert set(created) == {"id", "blobId", "threadId", "size"}
    got = await _one(client, ids=[created["id"]], properties=[
        "subject", "from", "to", "inReplyTo", "header:X-Agent:asText", "threadId", "mailboxIds", "keywords",
        "attachments", "bodyValues", "textBody", "htmlBody"], fetchAllBodyValues=True)
    assert got["subject"] == "Re: Report — ok" and got["from"] == [{"name": "Agent Ü", "email": AGENT}]
    assert got["inReplyTo"] == ["parent@example.net"] and got["header:X-Agent:asText"] == "draft one"
    parent_thread = (await _one(client, ids=[parent], properties=["threadId"]))["threadId"]
    assert got["threadId"] == parent_thread  # a reply joins its parent's thread
    assert got["mailboxIds"] == {"drafts": True} and got["keywords"] == {"$draft": True, "$seen": True}
    assert [a["name"] for a in got["attachments"]] == ["plan.pdf"]
    assert sorted(v["value"].strip() for v in got["bodyValues"].values()) == ["<p>HTML body</p>", "Text body"]
    part = await client.get(f"/api/v1/jmap/download/{ACCOUNT}/{got['attachments'][0]['blobId']}/plan.pdf",
                            headers=MINE)
    assert part.content == PDF
    raw = await client.get(f"/api/v1/jmap/download/{ACCOUNT}/{created['blobId']}/d.eml", headers=MINE)
    upload = await client.post(f"/api/v1/jmap/upload/{ACCOUNT}", content=raw.content,
                               headers={**MINE, "content-type": "message/rfc822"})
    name, answer = await call(client, "Email/import", {"emails": {"i1": {
        "blobId": upload.json()["blobId"], "mailboxIds": {"archive": True}, "keywords": {"$seen": True},
        "receivedAt": "2024-01-01T00:00:00Z"}, "i2": {"blobId": "Unope", "mailboxIds": {"archive": True}}}})
    assert name == "Email/import", answer
    imported = answer["created"]["i1"]
    assert answer["notCreated"]["i2"]["type"] == "blobNotFound"
    got = await _one(client, ids=[imported["id"]], properties=["receivedAt", "subject", "mailboxIds"])
    assert got == {"id": imported["id"], "receivedAt": "2024-01-01T00:00:00Z", "subject": "Re: Report — ok",
                   "mailboxIds": {"archive": True}}


async def test_create_refuses_what_it_may_not_set(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    base = {"mailboxIds": {"drafts": True}, "bodyValues": {"t": {"value": "x"}},
            "textBody": [{"partId": "t", "type": "text/plain"}]}
    cases = {"a": {**base, "id": "x"}, "b": {**base, "headers": []}, "c": {**base, "subject": "a\r\nBcc: x@y"},
             "d": {**base, "mailboxIds": {}}, "e": {**base, "header:Content-Type": "text/html"},
             "f": {**base, "subject": "s", "header:Subject": " t"}, "g": {**base, "bodyValues": {}},
             "h": {**base, "attachments": [{"blobId": "Unope"}]}}
    _, answer = await call(client, "Email/set", {"create": cases})
    assert answer["created"] is None
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {
        "a": "invalidProperties", "b": "invalidProperties", "c": "invalidProperties", "d": "invalidProperties",
        "e": "invalidProperties", "f": "invalidProperties", "g": "invalidProperties", "h": "blobNotFound"}


async def test_upload_limits(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    service_limit = (await client.get("/.well-known/jmap", headers=MINE)).json()["capabilities"][
        "urn:ietf:params:jmap:core"]["maxSizeUpload"]
    big = await client.post(f"/api/v1/jmap/upload/{ACCOUNT}", content=b"x" * (service_limit + 1), headers=MINE)
    assert big.status_code == 413 and big.json()["limit"] == "maxSizeUpload"


async def test_sort_by_sent_at_and_min_max_size(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    late = await deliver(client, message(subject="late", extra={"Date": "Fri, 05 Jan 2024 10:00:00 +0000"}))
    early = await deliver(client, message(subject="early", text="x" * 3000,
                                          extra={"Date": "Mon, 01 Jan 2024 10:00:00 +0000"}))
    assert (await _query(client, sort=[{"property": "sentAt"}]))["ids"] == [early, late]
    assert (await _query(client, sort=[{"property": "sentAt", "isAscending": False}]))["ids"] == [late, early]
    sizes = {e["id"]: e["size"] for e in (await call(client, "Email/get", {"ids": [late, early],
                                                                          "properties": ["size"]}))[1]["list"]}
    assert (await _query(client, filter={"minSize": sizes[early]}))["ids"] == [early]
    assert (await _query(client, filter={"maxSize": sizes[early]}))["ids"] == [late]
