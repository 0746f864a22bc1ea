"""One reading of message bytes: where readers could disagree, the message is refused."""

import pytest

from appliance.errors import MalformedMessage, MessageTooComplex, MessageTooLarge
from appliance.mail import ReadingLimits, read_message, split_header

MSG = b"From: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


def test_a_crlf_message_is_read_as_it_is() -> None:
    message = read_message(MSG)
    assert message.data is MSG
    assert [f.name for f in message.fields] == ["From", "Subject"]
    assert message.body == b"body\r\n"
    assert message.header == b"From: a@example.net\r\nSubject: hi\r\n"
    assert [MSG[f.start:f.end] for f in message.fields] == [b"From: a@example.net\r\n", b"Subject: hi\r\n"]


def test_a_bare_lf_message_is_read_as_crlf_throughout() -> None:
    message = read_message(MSG.replace(b"\r\n", b"\n"))
    assert message.data == MSG


def test_bare_lf_in_the_body_of_a_crlf_message_becomes_crlf() -> None:
    message = read_message(b"From: a@example.net\r\n\r\nline one\nline two\r\n")
    assert message.body == b"line one\r\nline two\r\n"


@pytest.mark.parametrize("raw", [
    # the parser would see a body where dkimpy sees a header continuation (or the reverse)
    b"From: a@example.net\r\nSubject: hi\r\n\r\rX-Hidden: yes\r\n\r\nbody\r\n",
    b"From: a@example.net\r\nSubject: hi\rTo: victim@example.org\r\n\r\nbody\r\n",
    b"From: a@example.net\r\n\r\nbody with a bare CR\r here\r\n",
])
def test_a_bare_cr_anywhere_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedMessage, match="bare CR"):
        read_message(raw)


def test_a_header_block_mixing_crlf_and_bare_lf_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="mixes CRLF and bare LF"):
        read_message(b"From: a@example.net\r\nSubject: hi\nTo: b@example.org\r\n\r\nbody\r\n")


def test_nul_in_the_header_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="NUL"):
        read_message(b"From: a@example.net\r\nSubject: h\0i\r\n\r\nbody\r\n")


def test_a_line_that_is_not_a_header_field_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="not a header field"):
        read_message(b"From: a@example.net\r\nno colon here\r\n\r\nbody\r\n")
    with pytest.raises(MalformedMessage, match="continuation"):
        read_message(b" folded: first\r\nFrom: a@example.net\r\n\r\nbody\r\n")


def test_header_limits_are_enforced_before_any_parser_runs() -> None:
    limits = ReadingLimits(max_header_bytes=2048, max_header_fields=10, max_header_line=998)
    with pytest.raises(MessageTooLarge, match="2048 bytes"):
        read_message(b"From: a@example.net\r\nSubject: " + b"x " * 2000 + b"\r\n\r\nbody", limits)
    many = b"".join(b"X-N: %d\r\n" % i for i in range(11))
    with pytest.raises(MessageTooComplex, match="10 header fields"):
        read_message(b"From: a@example.net\r\n" + many + b"\r\nbody", limits)
    with pytest.raises(MalformedMessage, match="999 bytes long"):
        read_message(b"From: a@example.net\r\nSubject: " + b"x" * 990 + b"\r\n\r\nbody")
    # a body line may be long: RFC 5322 limits it too, but real mail breaks that rule harmlessly
    read_message(b"From: a@example.net\r\n\r\n" + b"y" * 5000 + b"\r\n")


def test_a_message_without_body_has_every_field() -> None:
    message = read_message(b"From: a@example.net\r\nSubject: last")
    assert [f.value for f in message.fields] == [b" a@example.net", b" last"]
    assert message.body == b""


def test_split_header_is_lenient_and_agrees_with_the_reading() -> None:
    assert split_header(MSG) == (b"From: a@example.net\r\nSubject: hi", b"body\r\n")
    assert split_header(b"no header block at all") == (b"no header block at all", b"")
