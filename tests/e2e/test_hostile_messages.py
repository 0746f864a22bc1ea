"""No single message can freeze the appliance (issue: one message must not freeze the appliance).

A real appliance subprocess gets the hostile shapes over SMTP while a second
client keeps asking ``/healthz`` and sending ordinary mail. Every hostile
message is refused with its reason and audited; ordinary mail is accepted
meanwhile; the event loop keeps answering. The latency bound asserted here is
deliberately loose (a frozen loop misses it by seconds); ``bench/hostile.py``
measures the real figures.
"""

from __future__ import annotations

import smtplib
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.e2e.harness import ApplianceProcess, write_config

POLICY = """
defaultAction = "bounce"
[[senders]]
match = { domain = "example.net" }
capabilities = ["read"]
[[contentGuards]]
reject = "(?i)ignore (all )?previous instructions"
reason = "prompt_injection_suspected"
"""
HEAD = b"From: mallory@example.net\r\nTo: agent@example.test\r\nMessage-ID: <h-%d@example.net>\r\n"


def folded_subject(size: int) -> bytes:
    """The shape the standard library's header parser is quadratic on: many short folded words."""
    words = b"Subject: x" + b"\r\n a" * (size // 4)
    return HEAD % 1 + words + b"\r\n\r\nbody\r\n"


def many_headers(n: int) -> bytes:
    return HEAD % 2 + b"".join(b"X-H%d: v\r\n" % i for i in range(n)) + b"\r\nbody\r\n"


def long_header_line(size: int) -> bytes:
    return HEAD % 3 + b"X-Long: " + b"y" * size + b"\r\n\r\nbody\r\n"


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\np\r\n" for _ in range(n))
    return (HEAD % 4 + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + parts + b"--b--\r\n")


def nested(levels: int) -> bytes:
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(levels))
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return HEAD % 5 + b"MIME-Version: 1.0\r\n" + opening + b"Content-Type: text/plain\r\n\r\ndeep" + closing


def base64_bomb(size: int) -> bytes:
    import base64

    text = (b"harmless words " * (size // 15))[:size]
    body = base64.encodebytes(text)
    return (HEAD % 6 + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + body.replace(b"\n", b"\r\n"))


def ordinary(n: int) -> bytes:
    return (f"From: boss@example.net\r\nTo: agent@example.test\r\nSubject: ordinary {n}\r\n"
            f"Message-ID: <ok-{n}@example.net>\r\n\r\nhello {n}\r\n").encode()


def send(port: int, raw: bytes) -> tuple[int, str]:
    """Send one message; the reply to DATA (or to the line that ended the transaction)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        try:
            client.sendmail("mallory@example.net", ["agent@example.test"], raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        except smtplib.SMTPServerDisconnected:
            return 0, "disconnected"
    return 250, "ok"


class Watcher(threading.Thread):
    """Asks /healthz every 20 ms and sends ordinary mail every 200 ms until stopped."""

    def __init__(self, appliance: ApplianceProcess, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.appliance, self.stop = appliance, stop
        self.latencies: list[float] = []
        self.ordinary: list[int] = []

    def run(self) -> None:
        deadline = time.monotonic() + 240  # bounded whatever happens
        url = f"http://127.0.0.1:{self.appliance.http_port}/healthz"
        n = 0
        next_mail = time.monotonic()
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                http.get(url).raise_for_status()
                self.latencies.append(time.monotonic() - started)
                if time.monotonic() >= next_mail:
                    n += 1
                    code, _ = send(self.appliance.smtp_port, ordinary(n))
                    self.ordinary.append(code)
                    next_mail = time.monotonic() + 0.2
                time.sleep(0.02)


def appliance_with(tmp_path: Path, reading: str = "") -> ApplianceProcess:
    config = write_config(tmp_path, policy=POLICY)
    config.write_text(config.read_text().replace("[smtp]\n", "[smtp]\nmax_message_size = 30000000\n")
                      + "[reading]\n" + reading)
    return ApplianceProcess(config)


def audited(tmp_path: Path) -> list[tuple[str | None, str | None, str | None]]:
    """(message id, reason, detail) of every refusal; a message refused mid-DATA has no id."""
    with duckdb.connect(str(tmp_path / "var" / "appliance.duckdb"), read_only=True) as con:
        return con.execute("SELECT message_id, reason, detail FROM decisions WHERE action = 'bounce' "
                           "ORDER BY seq").fetchall()


@pytest.mark.timeout(300)
def test_hostile_shapes_are_refused_while_the_appliance_stays_responsive(tmp_path: Path) -> None:
    hostile = {
        "folded subject": (folded_subject(1_800_000), 552, "message_too_large"),
        "100,000 headers": (many_headers(100_000), 552, "message_too_large"),
        "one 5 MB header line": (long_header_line(5_000_000), 500, "malformed_message"),
        "50,000 parts": (many_parts(50_000), 550, "message_too_complex"),
        "1,000 nested levels": (nested(1_000), 550, "message_too_complex"),
        "base64 bomb": (base64_bomb(20_000_000), 552, None),
    }
    with appliance_with(tmp_path) as appliance:
        stop = threading.Event()
        watcher = Watcher(appliance, stop)
        watcher.start()
        replies = {}
        try:
            for name, (raw, _, _) in hostile.items():
                replies[name] = send(appliance.smtp_port, raw)
        finally:
            time.sleep(0.5)
            stop.set()
            watcher.join(60)
        assert appliance.terminate() == 0
    for name, (_, code, _) in hostile.items():
        assert replies[name][0] == code, (name, replies[name])
    assert watcher.ordinary and set(watcher.ordinary) == {250}, watcher.ordinary
    worst = max(watcher.latencies)
    print(f"/healthz: {len(watcher.latencies)} requests, worst {worst * 1000:.0f} ms, "
          f"ordinary mail {len(watcher.ordinary)} accepted")
    assert worst < 1.0, f"event loop blocked for {worst:.2f} s"
    rows = audited(tmp_path)
    assert len(rows) == len(hostile), rows  # every hostile message is audited once, with why
    by_id = {mid: (reason, detail) for mid, reason, detail in rows if mid is not None}
    for name, (raw, _, reason) in hostile.items():
        mid = raw.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
        if name == "one 5 MB header line":  # refused by the SMTP layer before the message is whole
            assert (None, "malformed_message") in [(m, r) for m, r, _ in rows], rows
        elif reason is not None:
            assert by_id[mid][0] == reason and by_id[mid][1], (name, rows)


@pytest.mark.timeout(120)
def test_a_reading_past_its_deadline_costs_its_reader_and_is_refused_too_complex(tmp_path: Path) -> None:
    # Limits raised so the quadratic parse really runs; the deadline is what stops it.
    reading = "deadline = 1.0\nmax_header_bytes = 8000000\nmax_header_fields = 1000000\n"
    with appliance_with(tmp_path, reading) as appliance:
        started = time.monotonic()
        code, text = send(appliance.smtp_port, folded_subject(3_000_000))
        assert (code, "5.6.0") == (550, text.split()[0]), text
        assert "took over 1 s" in text
        assert time.monotonic() - started < 30
        # the reader was replaced: ordinary mail still goes through
        assert send(appliance.smtp_port, ordinary(1))[0] == 250
        assert appliance.terminate() == 0


@pytest.mark.timeout(120)
def test_sigterm_is_obeyed_while_a_hostile_message_is_being_read(tmp_path: Path) -> None:
    reading = "deadline = 20.0\nmax_header_bytes = 8000000\nmax_header_fields = 1000000\n"
    with appliance_with(tmp_path, reading) as appliance:
        sender = threading.Thread(target=lambda: send(appliance.smtp_port, folded_subject(3_000_000)), daemon=True)
        sender.start()
        time.sleep(2.0)  # the message is being read now
        started = time.monotonic()
        assert appliance.proc is not None
        readers = children(appliance.proc.pid)
        assert len(readers) >= 1
        code = appliance.terminate(timeout=60)
        stopped = time.monotonic() - started
        assert code == 0
        print(f"stopped {stopped:.1f} s after SIGTERM")
        assert stopped < 45  # the grace for transactions in flight is 30 s
        sender.join(30)
    time.sleep(0.5)
    assert [pid for pid in readers if Path(f"/proc/{pid}").exists()] == []  # no reader outlives it


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found
