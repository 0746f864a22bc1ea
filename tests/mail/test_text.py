"""extract_readable: a parsed message → the text its reader would see."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import html
from email.message import EmailMessage

import pytest

from appliance.errors import MessageTooComplex
from appliance.mail import ReadableText, extract_readable, html_to_text
from appliance.mail.text import MAX_DEPTH

_PARSER = email.parser.BytesParser(policy=email.policy.default)


def parse(raw: bytes) -> EmailMessage:
    msg = _PARSER.parsebytes(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert isinstance(msg, EmailMessage)
    return msg


def readable(raw: bytes, **kwargs: int) -> ReadableText:
    return extract_readable(parse(raw), **kwargs)


def wheres(r: ReadableText) -> list[str]:
    return [p.where for p in r.parts]


HEAD = (b"From: Alice <alice@example.net>\nTo: agent@example.test\nSubject: Hello\n"
        b"MIME-Version: 1.0\n")
PLAIN = b"Content-Type: text/plain; charset=utf-8\n"


def test_plain_message_gives_subject_names_and_body_as_agent_text() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; charset=utf-8\n\nHi there,\nsee you.\n")
    assert r.text_of("subject") == "Hello"
    assert r.text_of("from.display_name") == "Alice"
    assert r.text_of("body[1] text/plain") == "Hi there,\nsee you.\n"
    assert r.agent_text == "Hi there,\nsee you.\n"
    assert r.html is None
    assert not r.truncated
    assert r.total_chars == sum(len(p.text) for p in r.parts)


def test_message_without_content_type_is_read_as_text_plain() -> None:
    r = readable(b"From: a@example.net\nSubject: x\n\nbody text\n")
    assert r.agent_text == "body text\n"


def test_agent_text_prefers_text_plain_over_html_in_alternative() -> None:
    r = readable(HEAD + b"""Content-Type: multipart/alternative; boundary=B

--B
Content-Type: text/html; charset=utf-8

<p>Rich <b>text</b></p>
--B
Content-Type: text/plain; charset=utf-8

Plain text
--B--
""")
    assert r.agent_text == "Plain text"
    assert r.html == "<p>Rich <b>text</b></p>"
    assert wheres(r)[-3:] == ["body[1] text/html", "body[1] text/html html.markup", "body[2] text/plain"]
    assert r.text_of("body[1] text/html html.markup") == r.html


def test_agent_text_is_reduced_html_when_there_is_no_text_plain() -> None:
    r = readable(HEAD + b"Content-Type: text/html\n\n<h1>Title</h1><p>One &amp; two</p>\n")
    assert r.agent_text == "Title\n\nOne & two"
    assert r.html is not None and r.html.startswith("<h1>")


def test_base64_and_quoted_printable_bodies_are_decoded() -> None:
    body = base64.b64encode("Grüße aus Köln".encode()).decode()
    r = readable(HEAD + PLAIN + b"Content-Transfer-Encoding: base64\n\n"
                 + body.encode() + b"\n")
    assert r.agent_text == "Grüße aus Köln"
    r = readable(HEAD + PLAIN + b"Content-Transfer-Encoding: quoted-printable\n\n"
                 b"soft=\nbreak =C3=A9t=C3=A9\n")
    assert r.agent_text == "softbreak été\n"


def test_declared_charset_is_honoured() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; charset=koi8-r\n\n\xf0\xd2\xc9\xd7\xc5\xd4\n")
    assert r.agent_text == "Привет\n"
    r = readable(HEAD + b"Content-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9\n")
    assert r.agent_text == "café\n"


def test_unknown_charset_falls_back_to_utf8_then_replacement() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; charset=x-no-such-charset\n\nna\xc3\xafve\n")
    assert r.agent_text == "naïve\n"
    r = readable(HEAD + b"Content-Type: text/plain; charset=x-no-such-charset\n\ncaf\xe9 \x81\n")
    assert r.agent_text.startswith("café ")


def test_wrong_charset_decodes_with_replacement_without_raising() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; charset=us-ascii\n\nna\xc3\xafve text\n")
    assert r.agent_text.startswith("na") and r.agent_text.endswith("ve text\n")
    assert "\ufffd" in r.agent_text


def test_utf16_declared_body_is_also_read_as_undeclared_bytes() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; charset=utf-16\n\nplain ascii words\n")
    assert r.text_of("body[1] text/plain (as undeclared bytes)") == "plain ascii words\n"


def test_non_text_codec_names_are_not_used_as_charsets() -> None:
    for charset in (b"rot13", b"zlib", b"punycode", b"unicode_escape", b"undefined"):
        r = readable(HEAD + b"Content-Type: text/plain; charset=" + charset + b"\n\nplain words\n")
        assert r.agent_text == "plain words\n", charset


def test_rfc2047_subject_and_display_names_are_decoded() -> None:
    r = readable(b"From: =?utf-8?q?Ren=C3=A9?= <r@example.net>\n"
                 b"To: \"=?iso-8859-1?b?Sm9z6Q==?=\" <j@example.test>, plain@example.test\n"
                 b"Cc: Team <t@example.test>\nReply-To: =?utf-8?q?Support_Desk?= <s@example.net>\n"
                 b"Sender: Bulk <b@example.net>\n"
                 b"Subject: =?utf-8?b?w4l0w6k=?= =?utf-8?q?_report?=\n\nx\n")
    assert r.text_of("subject") == "Été report"
    assert r.text_of("from.display_name") == "René"
    assert r.text_of("to.display_name") == "José"
    assert r.text_of("cc.display_name") == "Team"
    assert r.text_of("reply_to.display_name") == "Support Desk"
    assert r.text_of("sender.display_name") == "Bulk"


def test_raw_utf8_headers_are_decoded() -> None:
    r = readable("From: \"Zoë\" <z@example.net>\nSubject: naïve café\n\nx\n".encode())
    assert r.text_of("subject") == "naïve café"
    assert r.text_of("from.display_name") == "Zoë"


def test_every_subject_header_is_read() -> None:
    r = readable(b"From: a@example.net\nSubject: first\nSubject: second\n\nx\n")
    assert r.text_of("subject") == "first"
    assert r.text_of("subject[2]") == "second"


def test_encoded_word_the_header_parser_leaves_alone_is_decoded_too() -> None:
    r = readable(b"From: a@example.net\nSubject: pre=?utf-8?q?fix?=ed\n\nx\n")
    texts = [p.text for p in r.parts if p.where.startswith("subject")]
    assert "prefixed" in texts


def test_text_attachments_are_parts_named_by_filename() -> None:
    r = readable(HEAD + b"""Content-Type: multipart/mixed; boundary=B

--B
Content-Type: text/plain

See attached.
--B
Content-Type: text/csv; name=data.csv
Content-Disposition: attachment; filename=data.csv
Content-Transfer-Encoding: base64

""" + base64.b64encode(b"a,b\n1,2\n") + b"""
--B
Content-Type: application/pdf
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

""" + base64.b64encode(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length 9 >>\nstream\nx\x9c\x03\x00") + b"""
--B
Content-Type: text/html
Content-Disposition: attachment

<p>Attached <i>page</i></p>
--B--
""")
    assert r.text_of("attachment data.csv") == "a,b\n1,2\n"
    assert r.text_of("attachment[3] filename") == "report.pdf"
    assert r.text_of("attachment[4] text/html") == "Attached page"
    assert not any(p.where == "attachment report.pdf" for p in r.parts)
    assert r.agent_text == "See attached."


def test_nested_message_headers_and_body_are_read_but_not_agent_text() -> None:
    r = readable(HEAD + b"""Content-Type: multipart/mixed; boundary=B

--B
Content-Type: message/rfc822

From: Inner <inner@example.org>
Subject: Forwarded
Content-Type: text/plain

Inner body
--B--
""")
    assert r.text_of("message[1] subject") == "Forwarded"
    assert r.text_of("message[1] from.display_name") == "Inner"
    assert r.text_of("message[1] body[1] text/plain") == "Inner body"
    assert r.agent_text == ""


def test_multipart_without_boundary_is_read_as_unparsed_text() -> None:
    r = readable(HEAD + b"Content-Type: multipart/mixed\n\nloose text\n")
    assert r.text_of("body[1] multipart/mixed (unparsed)") == "loose text\n"


def test_format_flowed_soft_breaks_are_joined() -> None:
    r = readable(HEAD + b"Content-Type: text/plain; format=flowed; delsp=yes\n\n"
                 b"split wo \nrd and  \n stuffed\n-- \nsig\n")
    assert r.agent_text == "split word and stuffed\n-- \nsig\n"
    r = readable(HEAD + b"Content-Type: text/plain; format=flowed\n\nsoft \nbreak\n")
    assert r.agent_text == "soft break\n"


def test_html_inline_tags_join_and_block_tags_break_lines() -> None:
    assert html_to_text("ig<b>nore</b> <i>this</i>") == "ignore this"
    assert html_to_text("<div>one</div><div>two</div>a<br>b<li>c</li>") == "one\ntwo\na\nb\nc"
    assert html_to_text("<table><tr><td>x</td><td>y</td></tr></table>") == "x y"
    assert html_to_text("<p>para</p><p>graph</p>") == "para\n\ngraph"
    assert html_to_text("<pre>  keep\n    indent</pre>") == "  keep\n    indent"
    assert html_to_text("a&nbsp;b &lt;tag&gt; &#105;&#x67;") == "a\xa0b <tag> ig"


def test_html_hidden_text_is_kept_and_a_visible_reading_is_added() -> None:
    r = readable(HEAD + b"Content-Type: text/html\n\n"
                 b"<p>Shown <span style='display: none'>secret</span><span hidden>also</span>"
                 b"<font style='font-size:0px'>tiny</font> end</p>\n")
    assert r.agent_text == "Shown secretalsotiny end"
    assert r.text_of("body[1] text/html (visible)") == "Shown end"


def test_html_comments_scripts_styles_and_attributes_are_parts() -> None:
    r = readable(HEAD + b"Content-Type: text/html\n\n"
                 b"<html><head><style>p{color:red}</style><script>var a=1;</script></head>"
                 b"<body><!-- note --><img alt='Logo' title='Company'><a aria-label='Open'>x</a>"
                 b"<![CDATA[raw data]]></body></html>\n")
    assert r.text_of("body[1] text/html html.comment") == "note\nraw data"
    assert r.text_of("body[1] text/html html.script") == "var a=1;"
    assert r.text_of("body[1] text/html html.style") == "p{color:red}"
    assert r.text_of("body[1] text/html html.attributes") == "Logo\nCompany\nOpen"
    assert r.agent_text == "x"


def test_broken_html_is_reduced_without_raising() -> None:
    sources = ("<p <b>x", "<!--", "</", "<![if x", "<a href='", "&#xFFFFFFFF; &#0;", "<" * 1000)
    for source in sources:
        html_to_text(source)


def test_output_is_bounded_by_max_chars() -> None:
    r = readable(HEAD + b"Content-Type: text/plain\n\n" + b"x" * 5000 + b"\n", max_chars=100)
    assert r.total_chars == 100
    assert r.truncated
    assert len(r.agent_text) <= 100


def test_odd_messages_do_not_raise() -> None:
    samples = [
        b"",
        b"\x00\xff\xfe",
        b"Subject: =?utf-8?b?!!!?= =?bogus?q?=ZZ?= =?utf-8?b?a?=\n\n",
        b"From: \"unterminated <a@\nTo: ,,,@,<>\nCc: :;\n\n",
        b"Content-Type: text/plain; charset=\"\"\nContent-Transfer-Encoding: base64\n\n@@@\n",
        b"Content-Type: text/plain; charset*=utf-8''%ZZ\n\nx\n",
        b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n--\n",
        b"Content-Type: message/rfc822\n\n\xff\xfe garbage",
        b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 f\n!!!\nend\n",
        b"Content-Disposition: attachment; filename*=bogus''%FF%FE\n\nx\n",
    ]
    for raw in samples:
        r = extract_readable(_PARSER.parsebytes(raw))
        assert isinstance(r, ReadableText)


def _nested(depth: int) -> bytes:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                    for i in range(depth))
    tail = b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    return b"From: a@example.net\n" + head + b"Content-Type: text/plain\n\ndeep text" + tail


def test_nesting_up_to_the_limit_is_walked_without_recursion() -> None:
    r = readable(_nested(MAX_DEPTH))
    assert any(p.text.startswith("deep text") for p in r.parts)


def test_nesting_past_the_limit_is_too_complex() -> None:
    with pytest.raises(MessageTooComplex, match="nested deeper than 50 levels"):
        readable(_nested(150))
    with pytest.raises(MessageTooComplex, match="deeper than 3"):
        readable(_nested(5), max_depth=3)


def _many_parts(count: int) -> bytes:
    parts = b"".join(b"--B\nContent-Type: text/plain\n\npart %d\n" % i for i in range(count))
    return HEAD + b"Content-Type: multipart/mixed; boundary=B\n\n" + parts + b"--B--\n"


def test_more_mime_parts_than_the_limit_is_too_complex() -> None:
    assert len(readable(_many_parts(998)).parts) > 998  # the root multipart counts as one
    with pytest.raises(MessageTooComplex, match="more than 1000 MIME parts"):
        readable(_many_parts(1000))
    with pytest.raises(MessageTooComplex, match="more than 10 MIME parts"):
        readable(_many_parts(10), max_parts=10)


def test_srcdoc_nested_past_its_limit_is_too_complex() -> None:
    doc = "x"
    for _ in range(12):
        doc = f"<iframe srcdoc='{html.escape(doc, quote=True)}'></iframe>"
    with pytest.raises(MessageTooComplex, match="srcdoc documents nested deeper than 8"):
        readable(HEAD + b"Content-Type: text/html\n\n" + doc.encode())


def test_html_part_gives_markup_decoded_markup_and_derived_views() -> None:
    r = readable(HEAD + b"Content-Type: text/html\n\n"
                 b"<p title='a&#32;b' data-x=1 style='content:\"\\41 \"'>T&amp;C</p>"
                 b"<a href='?q=%41%42'>x</a>\n")
    where = "body[1] text/html"
    assert r.text_of(f"{where} html.markup") == r.html
    decoded = r.text_of(f"{where} html.markup decoded")
    assert decoded is not None and "T&C" in decoded and "?q=AB" in decoded and 'content:"A"' in decoded
    assert r.text_of(f"{where} html.attribute names") == "title data-x style href"
    assert r.text_of(f"{where} html.css content") == "A"
    # The limit counts what was read (the markup), not the views derived from it.
    assert r.read_chars == sum(len(p.text) for p in r.parts
                               if not p.where.startswith(where) or p.where == f"{where} html.markup")


def test_read_chars_is_bounded_by_max_chars_with_html() -> None:
    r = readable(HEAD + b"Content-Type: text/html\n\n<p>" + b"word " * 100 + b"</p>\n", max_chars=120)
    assert r.truncated and r.read_chars <= 120


def test_preamble_and_epilogue_are_parts() -> None:
    r = readable(HEAD + b"Content-Type: multipart/mixed; boundary=B\n\nthe preamble\n--B\n"
                 b"Content-Type: text/plain\n\nbody\n--B--\nthe epilogue\n")
    assert r.text_of("preamble") == "the preamble"
    assert r.text_of("epilogue") == "the epilogue\n"
