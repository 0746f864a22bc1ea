import pytest

from appliance.errors import MalformedMessage
from appliance.message import parse_message


def test_eight_bit_bytes_in_message_ids_come_out_as_valid_text() -> None:
    raw = (b"From: boss@acme.com\r\nSubject: x\r\nMessage-ID: <\xff@acme.com>\r\nIn-Reply-To: <r\xe9@acme.com>\r\n"
           b"References: <a\xc3\xa9@acme.com>\r\n\r\nbody\r\n")
    parsed = parse_message(raw)
    assert parsed.message_id == "<\ufffd@acme.com>"
    assert parsed.in_reply_to == "<r\ufffd@acme.com>"
    assert parsed.references == ["<a\u00e9@acme.com>"]  # valid UTF-8 is kept as such
    for value in (parsed.message_id, parsed.in_reply_to, *parsed.references):
        value.encode("utf-8")  # no lone surrogates: the audit hash, DuckDB and JSON need valid text


@pytest.mark.parametrize("value", [
    "boss@=?utf-8?q?acme.com?=",
    "Boss <boss@=?utf-8?q?acme.com?=>",
    "=?utf-8?q?boss?=@acme.com",
])
def test_encoded_word_inside_the_from_address_is_malformed(value: str) -> None:
    with pytest.raises(MalformedMessage, match="encoded-word"):
        parse_message(f"From: {value}\r\nSubject: x\r\n\r\nbody\r\n".encode())


def test_encoded_word_in_the_display_name_is_only_a_label() -> None:
    parsed = parse_message(b"From: =?utf-8?q?boss=40acme.com?= <evil@x.test>\r\n\r\nbody\r\n")
    assert (parsed.sender.address, parsed.sender.display_name) == ("evil@x.test", "boss@acme.com")


def test_forged_trace_headers_claiming_our_name_are_removed_and_others_kept() -> None:
    from appliance.message import without_forged_trace

    raw = (b"Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=acme.com\r\n"
           b"Authentication-Results: upstream.example; spf=fail\r\n"
           b"X-Appliance-Decision: d123; action=accept\r\n"
           b"From: a@example.net\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.example.test; in the body\r\n")
    cleaned = without_forged_trace(raw, "mx.example.test")
    assert cleaned == (b"Authentication-Results: upstream.example; spf=fail\r\n"
                       b"From: a@example.net\r\nSubject: hi\r\n\r\n"
                       b"Authentication-Results: mx.example.test; in the body\r\n")
    untouched = b"From: a@example.net\r\n\r\nbody\r\n"
    assert without_forged_trace(untouched, "mx.example.test") is untouched
