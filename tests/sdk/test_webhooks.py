from __future__ import annotations

import base64
from datetime import UTC, datetime

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from appliance.sdk import (
    DeliveryFailed,
    EndpointDisabled,
    MessageQuarantined,
    MessageReceived,
    PayloadError,
    WebhookVerificationError,
    decode_secret,
    parse_event,
    sign,
    verify_webhook,
)

SECRET = "whsec_" + base64.b64encode(b"an-sdk-test-secret-0123456789abc").decode()
NOW = 1_700_000_000
BODY = (b'{"type":"message.received","timestamp":"2025-01-06T10:00:00Z","data":{"agent":"a@example.test",'
        b'"decisionId":"d1","emailId":"e1","threadId":"T1","messageId":null,"from":"x@example.net","to":[],'
        b'"cc":[],"subject":"Hi","receivedAt":"2025-01-06T10:00:00Z","text":"hello","html":null,'
        b'"capabilities":["read"],"budget":null,"capabilityToken":"tok","someFutureField":1}}')


def signed(body: bytes = BODY, *, secret: str = SECRET, msg_id: str = "msg_1", ts: int = NOW) -> dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": sign(secret, msg_id, ts, body)}


def test_our_signature_is_the_standard_webhooks_one() -> None:
    moment = datetime.fromtimestamp(NOW, UTC)
    assert sign(SECRET, "msg_1", NOW, BODY) == Webhook(SECRET).sign("msg_1", moment, BODY.decode())


def test_verify_returns_the_typed_event() -> None:
    event = verify_webhook(signed(), BODY, SECRET, now=NOW + 10)
    assert isinstance(event, MessageReceived)
    assert event.data.sender == "x@example.net" and event.data.capabilities == ["read"]
    assert event.data.received_at == datetime(2025, 1, 6, 10, tzinfo=UTC)


@pytest.mark.parametrize("change", ["body", "secret", "id", "timestamp"])
def test_verify_rejects_anything_changed(change: str) -> None:
    headers = signed()
    body = BODY
    secret = SECRET
    if change == "body":
        body = BODY.replace(b'"read"', b'"send"')
    elif change == "secret":
        secret = "whsec_" + base64.b64encode(b"another-secret-0123456789abcdefg").decode()
    elif change == "id":
        headers["Webhook-Id"] = "msg_2"
    else:
        headers["Webhook-Timestamp"] = str(NOW + 1)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, secret, now=NOW)


def test_verify_rejects_stale_and_future_timestamps_and_missing_headers() -> None:
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(signed(), BODY, SECRET, now=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify_webhook(signed(), BODY, SECRET, now=NOW - 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook({"webhook-id": "x"}, BODY, SECRET, now=NOW)
    headers = signed()
    headers["Webhook-Timestamp"] = "yesterday"
    with pytest.raises(WebhookVerificationError, match="unix seconds"):
        verify_webhook(headers, BODY, SECRET, now=NOW)


def test_rotation_either_secret_and_unknown_versions_ignored() -> None:
    old = "whsec_" + base64.b64encode(b"the-old-secret-0123456789abcdefg").decode()
    headers = signed(secret=old)
    headers["Webhook-Signature"] = "v2,AAAA " + headers["Webhook-Signature"]
    assert isinstance(verify_webhook(headers, BODY, [SECRET, old], now=NOW), MessageReceived)
    assert isinstance(verify_webhook(headers, BODY, f"{SECRET} {old}", now=NOW), MessageReceived)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, SECRET, now=NOW)


def test_secret_without_prefix_and_malformed_secrets() -> None:
    assert decode_secret(SECRET) == decode_secret(SECRET.removeprefix("whsec_"))
    for bad in ("whsec_", "whsec_!!!", ""):
        with pytest.raises(ValueError):
            decode_secret(bad)


def test_parse_every_event_type() -> None:
    ts = '"timestamp":"2025-01-06T10:00:00Z"'
    quarantined = parse_event('{"type":"message.quarantined",' + ts + ',"data":{"agent":"a","decisionId":"d",'
                              '"emailId":"e","from":"x@example.net","receivedAt":"2025-01-06T10:00:00Z",'
                              '"reason":"quarantined_by_rule"}}')
    assert isinstance(quarantined, MessageQuarantined) and quarantined.data.reason == "quarantined_by_rule"
    failed = parse_event('{"type":"delivery.failed",' + ts + ',"data":{"agent":"a","deliveryId":"msg_1",'
                         '"eventType":"message.received","attempts":10,"lastStatus":500}}')
    assert isinstance(failed, DeliveryFailed) and failed.data.attempts == 10
    disabled = parse_event('{"type":"endpoint.disabled",' + ts + ',"data":{"agent":"a","url":"https://x",'
                           '"deliveryId":"msg_1","reason":"410"}}')
    assert isinstance(disabled, EndpointDisabled)
    with pytest.raises(PayloadError):
        parse_event('{"type":"message.exploded",' + ts + ',"data":{}}')
    with pytest.raises(PayloadError):
        parse_event(b"not json")


def test_payload_round_trips_through_msgspec() -> None:
    event = parse_event(BODY)
    again = parse_event(msgspec.json.encode(event))
    assert again == event
