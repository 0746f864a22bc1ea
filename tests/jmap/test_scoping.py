"""An agent key reaching another account learns nothing: by id, result reference, blob id or download URL."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from tests.conftest import OTHER_AGENT
from tests.jmap.conftest import ACCOUNT, MINE, OTHER_ACCOUNT, THEIRS, call, deliver, jmap, message

PDF = b"%PDF-1.4 secret \x00"


async def theirs(client: AsyncTestClient) -> dict[str, str]:  # type: ignore[type-arg]
    """The other agent's email, thread, attachment, upload and mailbox."""
    email_id = await deliver(client, message(subject="Their secret", attachment=PDF), agent=OTHER_AGENT)
    assert email_id is not None
    _, got = await call(client, "Email/get", {"ids": [email_id], "properties": ["threadId", "attachments",
                                                                                  "blobId"]},
                           headers=THEIRS, account=OTHER_ACCOUNT)
    email = got["list"][0]
    upload = (await client.post(f"/api/v1/jmap/upload/{OTHER_ACCOUNT}", content=PDF, headers=THEIRS)).json()
    _, box = await call(client, "Mailbox/set", {"create": {"b": {"name": "Private"}}}, headers=THEIRS,
                           account=OTHER_ACCOUNT)
    return {"email": email_id, "thread": email["threadId"], "part": email["attachments"][0]["blobId"],
            "blob": email["blobId"], "upload": upload["blobId"], "mailbox": box["created"]["b"]["id"]}


async def test_ids_of_another_account_are_not_found_in_mine(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    other = await theirs(client)
    _, answer = await call(client, "Email/get", {"ids": [other["email"]]})
    assert answer["list"] == [] and answer["notFound"] == [other["email"]]
    _, answer = await call(client, "Thread/get", {"ids": [other["thread"]]})
    assert answer["list"] == [] and answer["notFound"] == [other["thread"]]
    _, answer = await call(client, "Mailbox/get", {"ids": [other["mailbox"]]})
    assert answer["list"] == [] and answer["notFound"] == [other["mailbox"]]
    _, answer = await call(client, "SearchSnippet/get", {"emailIds": [other["email"]], "filter": {"text": "secret"}})
    assert answer["list"] == [] and answer["notFound"] == [other["email"]]
    _, answer = await call(client, "Email/query", {"filter": {"inMailbox": other["mailbox"]}})
    assert answer["ids"] == []
    _, answer = await call(client, "Email/query", {"filter": {"text": "secret"}})
    assert answer["ids"] == []
    _, answer = await call(client, "Email/set", {"update": {other["email"]: {"keywords/$seen": True}},
                                                    "destroy": [other["email"]]})
    assert answer["notUpdated"][other["email"]]["type"] == "notFound"
    assert answer["notDestroyed"][other["email"]]["type"] == "notFound"
    mine = await deliver(client, message())
    _, answer = await call(client, "Email/set", {"update": {mine: {f"mailboxIds/{other['mailbox']}": True}}})
    assert answer["notUpdated"][mine]["properties"] == ["mailboxIds"]
    _, answer = await call(client, "Email/get", {"ids": [other["email"]], "properties": ["keywords"]},
                              headers=THEIRS, account=OTHER_ACCOUNT)
    assert answer["list"] == [{"id": other["email"], "keywords": {}}]  # untouched


async def test_another_account_by_id_or_reference(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    other = await theirs(client)
    body = await jmap(client, [
        ["Email/query", {"accountId": OTHER_ACCOUNT}, "a"],
        ["Email/get", {"accountId": ACCOUNT, "#ids": {"resultOf": "a", "name": "Email/query", "path": "/ids"}}, "b"],
        ["Email/query", {"accountId": ACCOUNT}, "c"],
        ["Email/get", {"accountId": OTHER_ACCOUNT, "#ids": {"resultOf": "c", "name": "Email/query",
                                                             "path": "/ids"}}, "d"],
        ["Email/get", {"accountId": ACCOUNT, "ids": [other["email"]], "#accountId": {
            "resultOf": "a", "name": "error", "path": "/accountId"}}, "e"]])
    answers = [r[1] for r in body["methodResponses"]]
    assert answers[0] == {"type": "accountNotFound"}
    assert answers[1]["type"] == "invalidResultReference"
    assert answers[3] == {"type": "accountNotFound"}
    assert answers[4]["type"] in ("invalidArguments", "invalidResultReference")
    assert other["email"] not in str(body)


async def test_blobs_and_downloads_of_another_account(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    other = await theirs(client)
    missing = await client.get(f"/api/v1/jmap/download/{ACCOUNT}/Bnothing/x", headers=MINE)
    assert missing.status_code == 404
    for blob in (other["blob"], other["part"], other["upload"]):
        mine = await client.get(f"/api/v1/jmap/download/{ACCOUNT}/{blob}/x", headers=MINE)
        across = await client.get(f"/api/v1/jmap/download/{OTHER_ACCOUNT}/{blob}/x", headers=MINE)
        assert (mine.status_code, across.status_code) == (404, 404)
        assert PDF not in mine.content and PDF not in across.content
        assert sorted(mine.json()) == sorted(missing.json())
        assert across.json()["detail"] == (await client.get(f"/api/v1/jmap/download/Anone/{blob}/x",
                                                            headers=MINE)).json()["detail"]
    upload = await client.post(f"/api/v1/jmap/upload/{OTHER_ACCOUNT}", content=b"x", headers=MINE)
    assert upload.status_code == 404
    _, answer = await call(client, "Email/import", {"emails": {"i": {"blobId": other["upload"],
                                                                        "mailboxIds": {"inbox": True}},
                                                                  "j": {"blobId": other["blob"],
                                                                        "mailboxIds": {"inbox": True}}}})
    assert {k: v["type"] for k, v in answer["notCreated"].items()} == {"i": "blobNotFound", "j": "blobNotFound"}
    _, answer = await call(client, "Email/set", {"create": {"d": {
        "mailboxIds": {"drafts": True}, "attachments": [{"blobId": other["part"]}],
        "bodyValues": {"t": {"value": "x"}}, "textBody": [{"partId": "t"}]}}})
    assert answer["notCreated"]["d"]["type"] == "blobNotFound"
    own = await client.get(f"/api/v1/jmap/download/{OTHER_ACCOUNT}/{other['part']}/x", headers=THEIRS)
    assert own.content == PDF  # the owner still can
