import pytest

from appliance.errors import MalformedMessage
from appliance.mail import parse_message


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


SIGNED_HEAD = b"DKIM-Signature: v=1; a=rsa-sha256; d=acme.com; s=s1; h=from:subject; bh=x; b=y\r\n"


@pytest.mark.parametrize("name", [b"Subject", b"To", b"Cc", b"Date", b"Reply-To", b"Message-ID", b"References",
                                  b"In-Reply-To", b"Sender", b"Bcc"])
def test_a_signed_message_with_a_duplicated_single_instance_header_is_malformed(name: bytes) -> None:
    raw = SIGNED_HEAD + b"From: a@acme.com\r\n" + name + b": one\r\n" + name.lower() + b": two\r\n\r\nbody\r\n"
    with pytest.raises(MalformedMessage, match="more than one"):
        parse_message(raw)


def test_an_unsigned_message_may_repeat_a_header_and_the_first_copy_is_read() -> None:
    parsed = parse_message(b"From: a@acme.com\r\nSubject: one\r\nSubject: two\r\n\r\nbody\r\n")
    assert parsed.subject == "one"


def test_a_u_label_domain_is_read_in_a_labels_and_utf8_display_names_are_labels() -> None:
    parsed = parse_message("From: Jörg Müller <Boss@Bücher.example>\r\n\r\nbody\r\n".encode())
    assert (parsed.sender.address, parsed.sender.display_name) == ("boss@xn--bcher-kva.example", "Jörg Müller")


def test_an_invalid_idn_domain_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="not a valid domain name"):
        parse_message("From: boss@-bücher.example\r\n\r\nbody\r\n".encode())


def test_the_thread_a_message_names_depends_on_its_sender() -> None:
    from appliance.mail import thread_root

    def reply(sender: str) -> bytes:
        return f"From: {sender}\r\nReferences: <victim@acme.com>\r\n\r\nbody\r\n".encode()

    assert thread_root(parse_message(reply("a@acme.com"))) == thread_root(parse_message(reply("A@acme.com")))
    assert thread_root(parse_message(reply("a@acme.com"))) != thread_root(parse_message(reply("mallory@x.test")))
