"""EmailSubmission (RFC 8621 7) through the Outbox: a reply to received mail, with the gate's capability token."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import AGENT
from tests.jmap.conftest import USING, call, deliver, jmap, message, runtime_of


async def _identity(client: AsyncTestClient) -> str:  # type: ignore[type-arg]
    _, answer = await call(client, "Identity/get", {"ids": None})
    identity: str = answer["list"][0]["id"]
    return identity


async def test_a_reply_is_submitted_and_its_draft_filed(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    if getattr(runtime_of(client), "outbox", None) is None:
        pytest.skip("this appliance has no outbox")
    parent = await deliver(client, message(message_id="<ask@example.net>", subject="Meeting?"))
    _, got = await call(client, "Email/get", {"ids": [parent], "properties": ["urn:appliance:jmap:gate",
                                                                                "threadId"]})
    token = got["list"][0]["urn:appliance:jmap:gate"]["capabilityToken"]
    identity = await _identity(client)
    body = await jmap(client, [
        ["Email/set", {"accountId": got["accountId"], "create": {"d": {
            "mailboxIds": {"drafts": True}, "keywords": {"$draft": True, "$seen": True},
            "from": [{"email": AGENT}], "to": [{"email": "alice@example.net"}], "subject": "Re: Meeting?",
            "inReplyTo": ["ask@example.net"], "references": ["ask@example.net"],
            "bodyValues": {"t": {"value": "Tuesday at ten works."}}, "textBody": [{"partId": "t"}]}}}, "a"],
        ["EmailSubmission/set", {"accountId": got["accountId"], "create": {"s": {
            "identityId": identity, "emailId": "#d", "urn:appliance:jmap:capabilityToken": token}},
            "onSuccessUpdateEmail": {"#s": {"keywords/$draft": None, "mailboxIds": {"sent": True}}}}, "b"],
        ["EmailSubmission/get", {"accountId": got["accountId"], "ids": ["#s"]}, "c"],
        ["Email/query", {"accountId": got["accountId"], "filter": {"inMailbox": "sent"}}, "d"]], using=USING)
    responses = body["methodResponses"]
    assert [r[0] for r in responses] == ["Email/set", "EmailSubmission/set", "Email/set", "EmailSubmission/get",
                                         "Email/query"], responses
    submitted = responses[1][1]["created"]["s"]
    assert submitted["undoStatus"] == "final" and submitted["threadId"] == got["list"][0]["threadId"]
    draft_id = responses[0][1]["created"]["d"]["id"]
    assert responses[2][1]["updated"] == {draft_id: None} and responses[2][2] == "b"
    submission = responses[3][1]["list"][0]
    assert submission["emailId"] == draft_id and submission["identityId"] == identity
    assert submission["envelope"]["rcptTo"] == [{"email": "alice@example.net", "parameters": None}]
    assert "alice@example.net" in submission["deliveryStatus"]
    sent = responses[4][1]["ids"]
    assert draft_id in sent and len(sent) == 2  # the filed draft, and the Outbox's own Sent copy
    _, copy = await call(client, "Email/get", {"ids": [i for i in sent if i != draft_id],
                                                  "properties": ["subject", "to", "threadId", "mailboxIds"]})
    assert copy["list"][0]["subject"] == "Re: Meeting?" and copy["list"][0]["mailboxIds"] == {"sent": True}
    assert copy["list"][0]["threadId"] == got["list"][0]["threadId"]


async def test_refusals_are_set_errors(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    if getattr(runtime_of(client), "outbox", None) is None:
        pytest.skip("this appliance has no outbox")
    await deliver(client, message(message_id="<ask2@example.net>"))
    identity = await _identity(client)
    _, created = await call(client, "Email/set", {"create": {"d": {
        "mailboxIds": {"drafts": True}, "to": [{"email": "stranger@elsewhere.example"}], "subject": "hi",
        "bodyValues": {"t": {"value": "x"}}, "textBody": [{"partId": "t"}]}}})
    draft = created["created"]["d"]["id"]
    cases = {"no-token": {"identityId": identity, "emailId": draft},
             "bad-token": {"identityId": identity, "emailId": draft,
                           "urn:appliance:jmap:capabilityToken": "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.bad"},
             "not-mine": {"identityId": "Inope", "emailId": draft},
             "no-email": {"identityId": identity, "emailId": "nope"}}
    _, answer = await call(client, "EmailSubmission/set", {"create": cases})
    errors = {k: v["type"] for k, v in answer["notCreated"].items()}
    assert errors == {"no-token": "forbiddenToSend", "bad-token": "forbiddenToSend",
                      "not-mine": "invalidProperties", "no-email": "invalidProperties"}
