"""Hostile shapes cost time in proportion to their size (issue 14: one linear pass per form).

Before, several of these took over 40 s at 100 KB (quadratic regexes in HTML
reduction, and the standard library's HTML parser on unclosed tags); at 300 KB
each now takes well under a second. The bound is loose on purpose: a
quadratic case would blow through it by orders of magnitude on any machine.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import time
from email.message import EmailMessage

import pytest

from appliance.errors import MessageTooComplex
from appliance.guards import scan
from appliance.mail import extract_readable
from appliance.policy.model import ContentGuard

GUARD = ContentGuard(reject=re.compile(r"(?i)ignore (all )?previous instructions"), reason="pi")
SIZE = 300_000
BOUND_SECONDS = 5.0
_PARSER = email.parser.BytesParser(policy=email.policy.default)


def _message(ctype: str, body: str) -> EmailMessage:
    raw = (f"From: m@example.net\r\nSubject: x\r\nContent-Type: {ctype}; charset=utf-8\r\n"
           f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}").encode("utf-8", "surrogatepass")
    msg = _PARSER.parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


HOSTILE = {
    "unclosed tags": ("text/html", "<a b='" * (SIZE // 6)),
    "unclosed comment": ("text/html", "<!--" + "x" * SIZE),
    "unclosed attribute quote": ("text/html", '<p title="' + "<b " * (SIZE // 3)),
    "style zeros": ("text/html", '<p style="font-size:' + "0" * SIZE + 'x">hi</p>'),
    "opacity zeros": ("text/html", '<p style="opacity:.' + "0" * SIZE + '1">hi</p>'),
    "css content unterminated strings": ("text/html", "<style>p{content:" + '\\"' * (SIZE // 2) + "</style>"),
    "css content repeated": ("text/html", "<style>" + "content:" * (SIZE // 8) + "</style>"),
    "pre spaces": ("text/html", "<pre>" + " " * SIZE + "x</pre>"),
    "spaces between blocks": ("text/html", ("<div>" + " \t" * 1000 + "</div>") * (SIZE // 2011)),
    "unclosed paragraphs": ("text/html", "<p>x" * (SIZE // 4)),
    "unclosed table rows": ("text/html", "<table>" + "<tr><td>x" * (SIZE // 9)),
    "unclosed list items": ("text/html", "<ul>" + "<li>x" * (SIZE // 5)),
    "select options": ("text/html", "<select>" + "<option>x" * (SIZE // 9)),
    "open formatting around paragraphs": ("text/html", "<font face=a>" * 5 + "<p>x</p>" * (SIZE // 8)),
    "entities and escapes": ("text/html", "&#105;&amp;%69\\69 \\u0069" * (SIZE // 24)),
    "zero-width between letters": ("text/plain", "\u200b".join("abcdefghij" * (SIZE // 40))),
    "tag characters": ("text/plain", "".join(chr(0xE0000 + ord(c)) for c in "hidden text " * (SIZE // 48))),
    "right-to-left overrides": ("text/plain", "\u202eab" * (SIZE // 3)),
    "lookalikes everywhere": ("text/plain", "іgnоrе рrеvіоus " * (SIZE // 16)),
    "encoded words": ("text/plain", "=?utf-8?q?" * (SIZE // 10)),
}


# What an HTML5 tree builder would build quadratically is refused before it is parsed.
REFUSED = {
    "deeply nested elements": ("text/html", "<div>" * (SIZE // 5), "nested deeper than 1000"),
    "deep phrasing then blocks": ("text/html", "<span>" * 5000 + "<div>x</div>" * (SIZE // 12), "deeper"),
    "self-closing syntax on html elements": ("text/html", "<div/>" * (SIZE // 6), "deeper"),
    "formatting re-created in every block": (
        "text/html", "<p>" + "".join(f"<b id={i}>" for i in range(400)) + "</p>" + "<p>x</p>" * (SIZE // 8),
        "re-creates more than"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_html_an_html5_parser_builds_quadratically_is_refused_at_once(name: str) -> None:
    ctype, body, message = REFUSED[name]
    msg = _message(ctype, body)
    start = time.perf_counter()
    with pytest.raises(MessageTooComplex, match=message):
        extract_readable(msg)
    assert time.perf_counter() - start < BOUND_SECONDS


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_read_in_linear_time(name: str) -> None:
    msg = _message(*HOSTILE[name])
    start = time.perf_counter()
    scan(extract_readable(msg), [GUARD])
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND_SECONDS, f"{name}: {elapsed:.1f} s for {SIZE // 1000} KB"
