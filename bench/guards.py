"""Content guards' cost: ``extract_readable`` + ``scan`` on messages of 2.7 KB, 100 KB and 1 MB.

    .venv/bin/python bench/guards.py [--repeat-scale 1.0] [--only NAME] [--timeout 60]

Messages are made here, deterministically: English prose as text/plain
(ASCII, and with a few non-ASCII characters as real mail has: one "—" puts a
whole body on the Unicode path), and as an HTML newsletter (tables, inline
styles, links with percent-encoded query strings, entities, a hidden
preheader, a comment). Then hostile shapes meant to find super-linear work
(unclosed tags, long zero runs in a style, zero-width characters between every
letter, Unicode tag characters, whitespace runs in ``<pre>``): their time per
MB should stay close to the benign ones'.

Each case runs in a child process with a time limit, so a quadratic case is
reported as over the limit instead of hanging the run. Figures are the median
of several runs, in milliseconds; ``parse`` (the email package) is shown apart.
The guards are the product page's pattern, and a policy of eight patterns.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import multiprocessing
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.guards import scan
from appliance.mail import extract_readable
from appliance.policy.model import ContentGuard

PRODUCT_GUARD = [ContentGuard(reject=re.compile(r"(?i)ignore (all )?previous instructions"),
                              reason="prompt_injection_suspected")]
EIGHT_GUARDS = [ContentGuard(reject=re.compile(p), reason=f"guard_{i}") for i, p in enumerate([
    r"(?i)ignore (all )?previous instructions",
    r"(?i)disregard (the|all|any) (above|prior|previous)",
    r"(?i)you are now (in )?developer mode",
    r"(?i)system prompt",
    r"(?i)\bjailbreak\b",
    r"(?i)act as (an? )?(unfiltered|uncensored)",
    r"(?i)forward (all|every) (mail|email|message)s? to",
    r"(?i)reveal (your|the) (api key|password|secret)",
])]

_PROSE = ("the quarterly report shows revenue growth across all regions while costs remained "
          "stable and the team expects further improvement next year after the product launch "
          "please review the attached figures and reply with your comments before friday "
          "meeting notes include action items for finance legal and operations")
_WORDS = _PROSE.split()
_UNICODE_WORDS = ["café", "naïve", "—", "“quoted”", "€120", "Grüße", "•"]
_HEAD = ("From: Newsletter <news@example.net>\r\nTo: agent@example.test\r\n"
         "Subject: Quarterly report\r\nMessage-ID: <bench@example.net>\r\nMIME-Version: 1.0\r\n")


def _prose(size: int, rng: random.Random, *, unicode: bool) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_UNICODE_WORDS) if unicode and rng.random() < 0.01 else rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
        if rng.random() < 0.08:
            words.append(".\r\n" if rng.random() < 0.7 else ".\r\n\r\n")
    return " ".join(words)


def _plain(size: int, *, unicode: bool) -> bytes:
    rng = random.Random(size)
    head = _HEAD + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    budget = size - len(head.encode())
    body = _prose(budget, rng, unicode=unicode)
    return (head + body).encode()[:size]


def _html(size: int) -> bytes:
    rng = random.Random(size + 1)
    head = _HEAD + "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    out = ['<!DOCTYPE html><html><head><style>td{font-family:Arial}.x{color:#333}</style></head><body>',
           '<div style="display:none;max-height:0">Your quarterly figures are here</div>',
           "<!-- newsletter v2 -->", '<table width="100%" cellpadding="0"><tr><td>']
    length = sum(map(len, out))
    while length < size - len(head) - 200:
        n = rng.randrange(1000)
        chunk = (f'<p style="margin:0 0 12px;font-size:14px">{_prose(300, rng, unicode=True)} '
                 f'<a href="https://example.net/t?u=%2Fr%2F{n}&amp;c=q{n}">read&nbsp;more</a> '
                 f'<span class="x"><b>{rng.choice(_WORDS)}</b> &amp; {rng.choice(_WORDS)}</span></p>\r\n'
                 f'<img src="https://example.net/i/{n}.png" alt="figure {n}" width="600">\r\n')
        out.append(chunk)
        length += len(chunk)
    out.append("</td></tr></table></body></html>\r\n")
    return (head + "".join(out)).encode()


def _single(ctype: str, body: str) -> bytes:
    return (_HEAD + f"Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + body).encode()


def _hostile(kind: str, size: int) -> bytes:
    if kind == "unclosed tags":
        return _single("text/html", "<a b='" * (size // 6))
    if kind == "style zeros":
        return _single("text/html", '<p style="font-size:' + "0" * size + 'x">hi</p>')
    if kind == "zero-width letters":
        return _single("text/plain", "\u200b".join("abcdefghij" * (size // 40)))
    if kind == "tag characters":
        return _single("text/plain", "".join(chr(0xE0000 + ord(c)) for c in "hidden text " * (size // 48)))
    if kind == "pre spaces":
        return _single("text/html", "<pre>" + " " * size + "x</pre>")
    if kind == "many entities":
        return _single("text/html", "&#105;&amp;%69\\69 " * (size // 18))
    raise ValueError(kind)


SIZES = {"2.7 KB": 2_700, "100 KB": 100_000, "1 MB": 1_000_000}
HOSTILE = ("unclosed tags", "style zeros", "zero-width letters", "tag characters", "pre spaces",
           "many entities")


def cases() -> dict[str, Callable[[], bytes]]:
    made: dict[str, Callable[[], bytes]] = {}
    for label, size in SIZES.items():
        made[f"text ascii {label}"] = lambda size=size: _plain(size, unicode=False)
        made[f"text {label}"] = lambda size=size: _plain(size, unicode=True)
        made[f"html {label}"] = lambda size=size: _html(size)
    for kind in HOSTILE:
        for label in ("100 KB", "1 MB"):
            made[f"hostile {kind} {label}"] = lambda kind=kind, size=SIZES[label]: _hostile(kind, size)
    return made


def _repeats(size: int, scale: float) -> int:
    base = 50 if size < 10_000 else 10 if size < 500_000 else 3
    return max(1, round(base * scale))


def measure(name: str, scale: float) -> str:
    raw = cases()[name]()
    parser = email.parser.BytesParser(policy=email.policy.default)
    parse_ms: list[float] = []
    extract_ms: list[float] = []
    scan1_ms: list[float] = []
    scan8_ms: list[float] = []
    for _ in range(_repeats(len(raw), scale)):
        t0 = time.perf_counter()
        msg = parser.parsebytes(raw)
        t1 = time.perf_counter()
        assert isinstance(msg, EmailMessage)
        readable = extract_readable(msg)
        t2 = time.perf_counter()
        hit = scan(readable, PRODUCT_GUARD)
        t3 = time.perf_counter()
        scan(readable, EIGHT_GUARDS)
        t4 = time.perf_counter()
        assert hit is None, (name, hit)
        parse_ms.append((t1 - t0) * 1e3)
        extract_ms.append((t2 - t1) * 1e3)
        scan1_ms.append((t3 - t2) * 1e3)
        scan8_ms.append((t4 - t3) * 1e3)
    med = statistics.median
    total = med(extract_ms) + med(scan1_ms)
    return (f"{name:34} {len(raw) / 1000:8.1f} KB  parse {med(parse_ms):8.1f}  extract {med(extract_ms):8.1f}  "
            f"scan {med(scan1_ms):8.1f}  scan(8) {med(scan8_ms):8.1f}  extract+scan {total:8.1f} ms"
            f"  ({total / (len(raw) / 1e6):7.0f} ms/MB)")


def _child(name: str, scale: float, queue: multiprocessing.Queue[str]) -> None:
    try:
        queue.put(measure(name, scale))
    except Exception as exc:  # report, do not hide, a failure of one case
        queue.put(f"{name:34} failed: {type(exc).__name__}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat-scale", type=float, default=1.0, help="multiply the number of runs per case")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for one case")
    args = parser.parse_args()
    context = multiprocessing.get_context("fork")
    for name in cases():
        if args.only not in name:
            continue
        queue: multiprocessing.Queue[str] = context.Queue()
        child = context.Process(target=_child, args=(name, args.repeat_scale, queue))
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            child.kill()
            child.join()
            print(f"{name:34} over the {args.timeout:.0f} s limit", flush=True)
            continue
        print(queue.get() if not queue.empty() else f"{name:34} died", flush=True)


if __name__ == "__main__":
    main()
