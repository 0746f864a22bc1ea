"""The token estimate counts what the agent reads once, not every view the guards scan."""

from appliance.gate.tokens import estimate_tokens
from appliance.mail import read_for_gate


def test_an_html_attachment_is_counted_once_though_it_is_scanned_in_several_forms() -> None:
    html = "<p>" + "word " * 400 + "</p>"
    raw = ("From: a@example.net\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
           '--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename="a.html"\r\n\r\n'
           f"{html}\r\n--b--\r\n").encode()
    readable = read_for_gate(raw).readable
    assert readable is not None
    assert sum(1 for p in readable.parts if p.where.startswith("attachment")) > 1  # several views scanned
    source = len(html) + 2  # the attachment as read, with its line end
    assert estimate_tokens(readable) <= -(-(len("hi\r\n") + len("s") + source + 16) // 4)


def test_the_part_limit_is_the_readings() -> None:
    from appliance.mail import ReadingLimits

    parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\np\r\n" for _ in range(12))
    raw = (f'From: a@example.net\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           f"{parts}--b--\r\n").encode()
    assert read_for_gate(raw).unreadable is None
    refused = read_for_gate(raw, ReadingLimits(max_parts=10)).unreadable
    assert refused is not None and refused.reason == "message_too_complex"
