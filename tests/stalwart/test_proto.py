"""The hook's wire types against requests in Stalwart's exact format (tests/stalwart/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.stalwart.hook import rebuild_message
from appliance.stalwart.proto import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    DeleteHeader,
    HookMessage,
    HookResponse,
    SmtpResponse,
    decode_request,
    encode_response,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", ["connect", "ehlo", "rcpt", "data", "data_dkim"])
def test_every_fixture_decodes(name: str) -> None:
    request = decode_request(fixture(name))
    assert request.context.stage == name.partition("_")[0]
    assert request.context.client.ip == "192.0.2.10"
    assert request.context.client.active_connections == 1
    assert request.context.server.name == "Stalwart v0.16.18"
    assert request.context.protocol.version == 1


def test_connect_stage_has_no_helo_and_no_envelope() -> None:
    request = decode_request(fixture("connect"))
    assert request.context.client.helo is None
    assert request.envelope is None and request.message is None
    assert request.context.tls is None and request.context.sasl is None


def test_rcpt_envelope_and_tls() -> None:
    request = decode_request(fixture("rcpt"))
    assert request.envelope is not None
    assert request.envelope.from_.address == "alice@example.net"
    assert [a.address for a in request.envelope.to] == ["agent@example.test"]
    assert request.context.tls is not None and request.context.tls.version == "TLSv1_3"
    assert request.context.queue is None


def test_data_message_rebuilds_to_its_reported_size() -> None:
    request = decode_request(fixture("data"))
    assert request.context.queue is not None and request.context.queue.id == "1b2c3d4e5f60718"
    assert request.message is not None
    raw = rebuild_message(request.message)
    assert len(raw) == request.message.size
    assert raw.startswith(b"From: Alice <alice@example.net>\r\nTo: agent@example.test\r\n")
    assert raw.endswith(b"\r\n\r\nSee you at noon.\r\n")


def test_rebuild_keeps_folding_spacing_and_utf8() -> None:
    message = HookMessage(
        headers=[("Subject", "  two  spaces\r\n\tfolded \r\n"), ("X-A", ":colon\r\n")],
        contents="caf\u00e9\r\n",
        size=0,
    )
    raw = rebuild_message(msgspec.structs.replace(message, size=54))
    assert raw == b"Subject:  two  spaces\r\n\tfolded \r\nX-A::colon\r\n\r\ncaf\xc3\xa9\r\n"
    assert len(raw) == 54


def test_rebuild_of_a_bare_lf_message_uses_lf_for_the_blank_line() -> None:
    message = HookMessage(headers=[("From", " a@b.example\n")], contents="body\n", size=24)
    assert rebuild_message(message) == b"From: a@b.example\n\nbody\n"


def test_unknown_fields_are_ignored() -> None:
    data: dict[str, Any] = json.loads(fixture("rcpt"))
    data["context"]["newThing"] = {"x": 1}
    data["envelope"]["to"][0]["parameters"] = {"NOTIFY": "NEVER"}
    request = decode_request(json.dumps(data).encode())
    assert request.envelope is not None and request.envelope.to[0].parameters == {"NOTIFY": "NEVER"}


def test_sasl_and_server_headers_decode() -> None:
    data: dict[str, Any] = json.loads(fixture("data"))
    data["context"]["sasl"] = {"login": "agent@example.test"}
    data["message"]["serverHeaders"] = [["Received", " from localhost\r\n"]]
    request = decode_request(json.dumps(data).encode())
    assert request.context.sasl is not None and request.context.sasl.login == "agent@example.test"
    assert request.message is not None and request.message.server_headers == [
        ("Received", " from localhost\r\n")
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["context"].update(stage="quit"), "$.context.stage"),
        (lambda d: d["context"].pop("client"), "client"),
        (lambda d: d["message"].update(headers=[["From"]]), "$.message.headers[0]"),
        (lambda d: d["message"].update(size="166"), "$.message.size"),
    ],
)
def test_schema_errors_name_the_field(change: Any, expected: str) -> None:
    data: dict[str, Any] = json.loads(fixture("data"))
    change(data)
    with pytest.raises(msgspec.ValidationError) as caught:
        decode_request(json.dumps(data).encode())
    assert expected in str(caught.value)


def test_response_uses_stalwarts_keys() -> None:
    response = HookResponse(
        action="reject", response=SmtpResponse.of(550, "5.7.1", "Rejected by policy")
    )
    assert json.loads(encode_response(response)) == {
        "action": "reject",
        "response": {
            "status": 550,
            "enhanced_status": "5.7.1",
            "enhancedStatus": "5.7.1",
            "message": "Rejected by policy",
        },
    }


def test_accept_omits_what_is_not_set() -> None:
    assert json.loads(encode_response(HookResponse(action="accept"))) == {"action": "accept"}


def test_modifications_are_tagged_by_type() -> None:
    response = HookResponse(
        action="accept",
        modifications=[
            AddHeader(name="X-A", value="1"),
            DeleteHeader(index=2, name="Authentication-Results"),
            ChangeFrom(value="a@b.example", parameters={"BODY": "8BITMIME", "SMTPUTF8": None}),
            AddRecipient(value="c@d.example"),
        ],
    )
    assert json.loads(encode_response(response))["modifications"] == [
        {"type": "addHeader", "name": "X-A", "value": "1"},
        {"type": "deleteHeader", "index": 2, "name": "Authentication-Results"},
        {
            "type": "changeFrom",
            "value": "a@b.example",
            "parameters": {"BODY": "8BITMIME", "SMTPUTF8": None},
        },
        {"type": "addRecipient", "value": "c@d.example", "parameters": {}},
    ]
