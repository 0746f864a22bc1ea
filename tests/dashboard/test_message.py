"""A message made safe to look at: what the sanitizer removes, and what the page lists."""

from __future__ import annotations

import pytest

from appliance.dashboard.message import sanitize_html, view_message


@pytest.mark.parametrize("hostile", [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '<svg><script>alert(1)</script></svg>',
    '<svg onload=alert(1)>',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<iframe src="https://evil.example/"></iframe>',
    '<object data="https://evil.example/x"></object>',
    '<embed src="https://evil.example/x">',
    '<form action="https://evil.example/"><input name=q></form>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<style>@import "https://evil.example/x.css";</style>',
    '<p style="background-image:url(https://evil.example/x)">x</p>',
    '<p style="width: expression(alert(1))">x</p>',
    '<img src="https://evil.example/pixel.gif">',
    '<img srcset="https://evil.example/a.png 2x">',
    '<img src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
])
def test_nothing_that_runs_or_reaches_out_survives(hostile: str) -> None:
    clean, _ = sanitize_html(f"<p>before</p>{hostile}<p>after</p>")
    lowered = clean.lower()
    for forbidden in ("<script", "onerror", "onload", "javascript:", "evil.example", "<iframe", "<object", "<embed",
                      "<form", "<meta", "<base", "<link", "<style", "url(", "expression", "data:text", "<svg"):
        assert forbidden not in lowered, (hostile, clean)
    assert "before" in clean


def test_inline_pictures_and_harmless_style_stay_and_remote_pictures_are_counted() -> None:
    clean, blocked = sanitize_html('<p style="color: red; position: fixed">hi</p><img src="data:image/gif;base64,R0lG">'
                                   '<img src="http://a.example/1.gif"><img src="//b.example/2.gif">'
                                   '<p style="color: rgb(1, 2, 3)">rgb</p>')
    assert '<p style="color:red">hi</p>' in clean and "rgb(1, 2, 3)" in clean
    assert '<img src="data:image/gif;base64,R0lG">' in clean
    assert blocked == 2


def test_text_html_and_attachments_are_read_from_the_mime_tree() -> None:
    raw = (b"From: A <a@example.net>\r\nTo: b@example.test\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
           b"--x\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"caf=E9\r\n"
           b"--x\r\nContent-Type: text/csv; name=numbers.csv\r\n"
           b"Content-Disposition: attachment; filename=numbers.csv\r\n"
           b"\r\na,b\r\n1,2\r\n"
           b"--x--\r\n")
    view = view_message(raw)
    assert view.headers["Subject"] == "Résumé" and view.headers["From"] == "A <a@example.net>"
    assert view.text.strip() == "café"
    assert view.html == "" and view.remote_images_blocked == 0
    assert [(a.name, a.content_type) for a in view.attachments] == [("numbers.csv", "text/csv")]
    assert view.attachments[0].size == len(b"a,b\r\n1,2")


def test_bytes_that_are_not_a_message_still_show_something() -> None:
    view = view_message(b"\x00\xff not a message at all")
    assert view.attachments == [] and view.html == ""
