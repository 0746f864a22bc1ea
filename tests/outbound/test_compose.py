"""Composing an agent's message: headers, threading, MIME structure, read back by real parsers."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import EmailMessage
from typing import Any

import pytest

from appliance.config import ApplianceConfig, OutboundConfig
from appliance.mail import extract_readable, parse_message, parse_tree, read_message
from appliance.outbound.compose import MAX_LINE, Attachment, Draft, compose, display_name, reply_target
from appliance.outbound.threading import MAX_REFERENCES, message_ids, references_for_reply, reply_subject

AGENT = "agent@example.test"
NOW = 1_736_157_600.0  # Mon, 06 Jan 2025 10:00:00 UTC
CONFIG = ApplianceConfig(hostname="mx.example.test",
                         outbound=OutboundConfig(display_names={"Agent@Example.test": "Ägent  Smith"}))


def parent(*, subject: str = "Lunch", message_id: str = "<p1@acme.com>", references: str = "",
           in_reply_to: str = "", reply_to: str = "") -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (("References", references), ("In-Reply-To",
                    in_reply_to), ("Reply-To", reply_to)) if value)
    return (f"From: Boss <boss@acme.com>\r\nTo: {AGENT}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
            f"{extra}\r\nLunch at noon?\r\n").encode()


def make(draft: Draft | None = None, *, reply_to: bytes | None = None, **changes: Any) -> tuple[Any, EmailMessage]:
    draft = draft or Draft(agent=AGENT, to=["boss@acme.com"], text="Noon works.", **changes)
    parsed = parse_message(reply_to) if reply_to is not None else None
    message = compose(draft, config=CONFIG, email_id="e1", thread_id="T1", now=NOW, parent=parsed)
    tree = email.message_from_bytes(message.raw, policy=email.policy.default)
    assert isinstance(tree, EmailMessage)
    return message, tree


def new(**changes: Any) -> tuple[Any, EmailMessage]:
    fields: dict[str, Any] = {"agent": AGENT, "to": ["boss@acme.com"], "subject": "Hello", "text": "Hi."}
    fields.update(changes)
    return make(Draft(**fields))


def content(part: Any) -> str:
    """A text part's content as the email package decodes it, line ends as LF."""
    text: str = part.get_content()
    return text.replace("\r\n", "\n")


def assert_wire_form(raw: bytes) -> None:
    """CRLF only, no line over 998 octets, and the appliance's own strict reading accepts it."""
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= MAX_LINE for line in raw.split(b"\r\n"))
    parse_message(read_message(raw))


# -- headers of new mail ---------------------------------------------------------------------------

def test_new_mail_headers() -> None:
    message, tree = new()
    assert str(tree["From"]) == "Ägent Smith <agent@example.test>"
    assert str(tree["To"]) == "boss@acme.com"
    assert tree["Subject"] == "Hello"
    assert tree["Date"] == "Mon, 06 Jan 2025 10:00:00 +0000"  # RFC 5322 3.3
    assert re.fullmatch(r"<[0-9a-f]{32}@mx\.example\.test>", tree["Message-ID"])
    assert message.message_id == tree["Message-ID"]
    assert tree["Auto-Submitted"] == "auto-generated"  # RFC 3834 5
    assert tree["In-Reply-To"] is None and tree["References"] is None and message.in_reply_to is None
    assert tree["MIME-Version"] == "1.0"
    assert (message.mail_from, message.recipients, message.subject) == (AGENT, ["boss@acme.com"], "Hello")
    assert_wire_form(message.raw)


def test_header_order_puts_identity_and_threading_first() -> None:
    message, _ = new()
    names = [line.split(b":")[0] for line in message.raw.split(b"\r\n\r\n")[0].split(b"\r\n") if line[:1] != b" "]
    assert names[:6] == [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Auto-Submitted"]


def test_message_ids_are_unique() -> None:
    assert new()[0].message_id != new()[0].message_id


def test_display_name_is_looked_up_case_insensitively_and_is_optional() -> None:
    assert display_name(CONFIG, "AGENT@example.test") == "Ägent Smith"
    assert display_name(CONFIG, "other@example.test") == ""
    _, tree = new(agent="other@example.test")
    assert str(tree["From"]) == "other@example.test"


def test_new_mail_needs_a_subject() -> None:
    with pytest.raises(ValueError, match="subject"):
        compose(Draft(agent=AGENT, to=["boss@acme.com"], text="x"), config=CONFIG, email_id="e", thread_id="T",
                now=NOW)


def test_subject_cannot_inject_headers() -> None:
    _, tree = new(subject="Hi\r\nBcc: eve@evil.example\r\n\r\nbody")
    assert tree["Bcc"] is None and tree["Subject"] == "Hi Bcc: eve@evil.example body"


@pytest.mark.parametrize("bad", ["eve@evil.example\r\nBcc: x@y.z", "no-at-sign", "a b@c.d", "<x@y.z>",
                                 "Eve <eve@evil.example>", "x@-bad-.example", "x@exa mple.com", "x@",
                                 "x@a..b", "x@a.-b.c", "x@[192.0.2.1]"])
def test_an_address_that_cannot_be_written_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValueError, match=r"cc\[1\]"):
        new(cc=["ok@acme.com", bad])


def test_idn_recipients_are_written_in_a_labels() -> None:
    message, tree = new(to=["jürgen@bücher.de"], cc=["Ops@Bücher.DE"])
    assert message.recipients == ["jürgen@xn--bcher-kva.de", "Ops@xn--bcher-kva.de"]
    # A non-ASCII local part needs SMTPUTF8 (RFC 6531): the header is UTF-8, not an encoded-word.
    assert "To: jürgen@xn--bcher-kva.de\r\n".encode() in message.raw
    assert str(tree["To"]) == "jürgen@xn--bcher-kva.de"
    assert_wire_form(message.raw)


def test_ascii_addresses_keep_the_message_ascii() -> None:
    message, tree = new(to=["ops@bücher.de"], subject="Grüße")
    assert message.raw.isascii()
    assert b"To: ops@xn--bcher-kva.de\r\n" in message.raw
    assert tree["Subject"] == "Grüße"  # RFC 2047 encoded word, decoded back


# -- replies ------------------------------------------------------------------------------------------

def test_reply_threading_headers() -> None:
    message, tree = make(reply_to=parent(references="<r0@acme.com> <r1@acme.com>"))
    assert tree["In-Reply-To"] == "<p1@acme.com>" == message.in_reply_to
    assert tree["References"].split() == ["<r0@acme.com>", "<r1@acme.com>", "<p1@acme.com>"]
    assert tree["Auto-Submitted"] == "auto-replied"  # RFC 3834 5.1
    assert tree["Subject"] == "Re: Lunch"
    assert_wire_form(message.raw)


def test_reply_to_a_message_without_references_starts_them_with_its_id() -> None:
    _, tree = make(reply_to=parent())
    assert tree["References"] == "<p1@acme.com>"


def test_reply_falls_back_to_the_parents_in_reply_to() -> None:
    _, tree = make(reply_to=parent(in_reply_to="<older@acme.com>"))
    assert tree["References"].split() == ["<older@acme.com>", "<p1@acme.com>"]


def test_references_are_bounded_to_the_first_and_the_last_twenty_and_folded() -> None:
    chain = "\r\n ".join(f"<id{i:03d}.{'x' * 20}@acme.com>" for i in range(40))
    message, tree = make(reply_to=parent(references=chain))
    ids = tree["References"].split()
    assert len(ids) == MAX_REFERENCES + 1
    assert ids[0] == "<id000.xxxxxxxxxxxxxxxxxxxx@acme.com>"
    assert ids[1] == "<id021.xxxxxxxxxxxxxxxxxxxx@acme.com>" and ids[-2] == "<id039.xxxxxxxxxxxxxxxxxxxx@acme.com>"
    assert ids[-1] == "<p1@acme.com>"
    head = message.raw.split(b"\r\n\r\n")[0]
    field = re.search(rb"^References:.*?(?=\r\n\S)", head, re.S | re.M)
    assert field is not None
    lines = field.group(0).split(b"\r\n")
    assert len(lines) > 1 and all(len(line) <= 78 for line in lines)


def test_references_drop_what_is_not_a_message_id() -> None:
    assert references_for_reply("<p@x>", ["<a@x> junk (comment) <b c@x> <ü@x> <d@x>"]) == ["<a@x>", "<d@x>", "<p@x>"]
    assert references_for_reply("<p@x>", ["<a@x>", "<p@x>"]) == ["<a@x>", "<p@x>"]
    assert references_for_reply("<p@x>", ["<a@x><b@x>"]) == ["<a@x>", "<b@x>", "<p@x>"]  # no space between
    assert references_for_reply(None, []) == []
    assert message_ids("<" + "a" * 300 + "@x>") == []


def test_parent_without_message_id_gets_no_in_reply_to() -> None:
    raw = b"From: boss@acme.com\r\nTo: agent@example.test\r\nSubject: Hi\r\n\r\nx\r\n"
    message, tree = make(reply_to=raw)
    assert tree["In-Reply-To"] is None and tree["References"] is None and message.in_reply_to is None
    assert tree["Auto-Submitted"] == "auto-replied"


@pytest.mark.parametrize(("subject", "expected"), [
    ("Lunch", "Re: Lunch"),
    ("Re: Lunch", "Re: Lunch"),
    ("RE: Lunch", "Re: Lunch"),
    ("re: Lunch", "Re: Lunch"),
    ("Re: Re: RE: Lunch", "Re: Lunch"),
    ("Re[2]: Lunch", "Re: Lunch"),
    ("Re(3): Lunch", "Re: Lunch"),
    ("AW: Lunch", "Re: Lunch"),
    ("Aw: SV: Antw: VS: Lunch", "Re: Lunch"),
    ("Re : Lunch", "Re: Lunch"),
    ("Re:Lunch", "Re: Lunch"),
    ("Re: Fwd: Lunch", "Re: Fwd: Lunch"),
    ("Fwd: Re: Lunch", "Re: Fwd: Re: Lunch"),
    ("Regarding lunch", "Re: Regarding lunch"),
    ("Area: lunch", "Re: Area: lunch"),
    ("  Lunch\t  today ", "Re: Lunch today"),
    ("", "Re:"),
])
def test_reply_subject_says_re_once(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected


def test_reply_subject_in_the_message() -> None:
    _, tree = make(reply_to=parent(subject="RE: Re[2]: Budget"))
    assert tree["Subject"] == "Re: Budget"


def test_a_reply_may_give_its_own_subject() -> None:
    draft = Draft(agent=AGENT, to=["boss@acme.com"], subject="Different", text="x")
    _, tree = make(draft, reply_to=parent())
    assert tree["Subject"] == "Different" and tree["In-Reply-To"] == "<p1@acme.com>"


# -- where a reply goes --------------------------------------------------------------------------------

@pytest.mark.parametrize(("from_", "reply_to", "target"), [
    ("boss@acme.com", None, "boss@acme.com"),
    ("boss@acme.com", "", "boss@acme.com"),
    ("boss@acme.com", "team@acme.com", "team@acme.com"),
    ("noreply@mail.acme.com", "Support <support@acme.com>", "support@acme.com"),
    ("boss@acme.com", "desk@eu.acme.com", "desk@eu.acme.com"),
    ("boss@acme.com", "attacker@evil.example", "boss@acme.com"),
    ("boss@acme.com", "boss@acme.com.evil.example", "boss@acme.com"),
    ("a@one.co.uk", "b@two.co.uk", "a@one.co.uk"),  # a public suffix is no organization
    ("a@shop.one.co.uk", "b@one.co.uk", "b@one.co.uk"),
    ("boss@acme.com", "team@acme.com, attacker@evil.example", "boss@acme.com"),
    ("boss@acme.com", "undisclosed-recipients:;", "boss@acme.com"),
    ("boss@acme.com", "team@acme.com\r\nBcc: x@evil.example", "boss@acme.com"),
    ("x@xn--bcher-kva.de", "y@bücher.de", "y@bücher.de"),
])
def test_reply_target_honours_only_an_aligned_reply_to(from_: str, reply_to: str | None, target: str) -> None:
    assert reply_target(from_, reply_to) == target


# -- bodies -----------------------------------------------------------------------------------------------

def test_ascii_text_is_7bit() -> None:
    message, tree = new(text="Hello\nthere")
    assert tree.get_content_type() == "text/plain" and tree["Content-Transfer-Encoding"] == "7bit"
    assert content(tree) == "Hello\nthere\n"
    assert message.body_sha256 == hashlib.sha256(message.raw.split(b"\r\n\r\n", 1)[1]).hexdigest()


def test_non_ascii_text_is_quoted_printable_utf8_never_8bit() -> None:
    text = "Grüße aus Köln — à bientôt.\n" + "long line " * 200
    message, tree = new(text=text)
    assert tree["Content-Transfer-Encoding"] == "quoted-printable"
    assert tree.get_content_charset() == "utf-8"
    assert content(tree) == text + "\n"
    assert message.raw.isascii()
    assert all(len(line) <= 78 for line in message.raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))
    assert_wire_form(message.raw)


def test_mostly_non_latin_text_is_base64() -> None:
    text = "会議は正午に始まります。よろしくお願いします。" * 5
    _, tree = new(text=text)
    assert tree["Content-Transfer-Encoding"] == "base64" and content(tree) == text + "\n"


def test_an_ascii_line_over_998_is_encoded() -> None:
    message, tree = new(text="x" * 5000)
    assert tree["Content-Transfer-Encoding"] == "quoted-printable" and content(tree) == "x" * 5000 + "\n"
    assert_wire_form(message.raw)


def test_line_ends_are_crlf_whatever_the_agent_wrote() -> None:
    message, tree = new(text="one\r\ntwo\rthree\nfour")
    assert content(tree) == "one\ntwo\nthree\nfour\n"
    assert_wire_form(message.raw)


def test_html_makes_multipart_alternative() -> None:
    message, tree = new(html="<p>Hi <b>there</b> — ok</p>")
    assert tree.get_content_type() == "multipart/alternative"
    plain, html = tree.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert content(html) == "<p>Hi <b>there</b> — ok</p>\n"
    assert plain["MIME-Version"] is None and html["MIME-Version"] is None
    readable = extract_readable(parse_tree(message.raw)[1])
    assert "Hi." in readable.agent_text
    assert_wire_form(message.raw)


def test_attachments_round_trip_through_the_email_parser() -> None:
    files = [Attachment(filename="report.pdf", content_type="application/pdf", data=b"%PDF-1.7\x00\xff binary"),
             Attachment(filename="Résumé – 2025.txt", content_type="text/plain", data="naïve\n".encode()),
             Attachment(filename="../../etc/passwd", data=b"x"),
             Attachment(filename="mail.eml", content_type="message/rfc822", data=b"From: a@b.c\r\n\r\nx\r\n"),
             Attachment(filename="weird", content_type="not a type", data=b"y")]
    message, tree = new(html="<p>Hi</p>", attachments=files)
    assert tree.get_content_type() == "multipart/mixed"
    body, *parts = tree.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_filename() for p in parts] == ["report.pdf", "Résumé – 2025.txt", "passwd", "mail.eml", "weird"]
    assert [p.get_content_type() for p in parts] == [
        "application/pdf", "text/plain", "application/octet-stream", "application/octet-stream",
        "application/octet-stream"]
    assert [p.get_payload(decode=True) for p in parts] == [f.data for f in files]
    assert b"filename*=utf-8''R%C3%A9sum%C3%A9%20%E2%80%93%202025.txt" in message.raw  # RFC 2231
    assert [a.filename for a in parse_message(message.raw).attachments] == [
        "report.pdf", "Résumé – 2025.txt", "passwd", "mail.eml", "weird"]
    assert_wire_form(message.raw)


def test_attachments_without_html_make_multipart_mixed_around_the_text() -> None:
    _, tree = new(attachments=[Attachment(filename="a.bin", data=b"\x00")])
    assert tree.get_content_type() == "multipart/mixed"
    text, attachment = tree.iter_parts()
    assert text.get_content_type() == "text/plain" and attachment.get_filename() == "a.bin"
