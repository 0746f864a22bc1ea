"""The product page's guard over public corpora: false positives on benign mail, and
proof that the pipeline finds the phrase when attack mail hides it.

The corpora (../shared/corpus/injection, MIT) are read in place:
- llmail-benign-fp-tests.json: 203 benign emails ("Subject of the email: ….   Body: …")
  used by the LLMail-Inject challenge to measure defences' false positives;
- bipia-email-contexts-train.jsonl: 50 real email bodies from BIPIA;
- bipia-text-attacks-train.json: 75 injected instructions from BIPIA in 15 categories.

None of the BIPIA attack texts contains an "ignore previous/all instructions" phrase (the
measured count below is 0), so the product page's regex catches none of them as they are:
it is one narrow pattern, not a prompt-injection detector. The second half of this file
prefixes each attack with that phrase, plants it in a real BIPIA email through each evasion,
and checks that extraction and normalization still let the pattern find it.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import quopri
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from appliance.guards import scan
from appliance.mail import extract_readable
from appliance.policy.model import ContentGuard

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
INJECTION = CORPUS / "injection"
GUARD = ContentGuard(reject=re.compile(r"ignore (previous|all) instructions", re.I),
                     reason="prompt_injection_suspected")
_PARSER = email.parser.BytesParser(policy=email.policy.default)

BENIGN_FALSE_POSITIVES = 0
"""Measured: benign LLMail emails the product page's guard rejects (of 203)."""
BIPIA_CONTEXT_FALSE_POSITIVES = 0
"""Measured: BIPIA email contexts the guard rejects (of 50)."""
BIPIA_ATTACKS_CAUGHT_AS_IS = 0
"""Measured: BIPIA attack texts the guard catches without an added phrase (of 75)."""


def _load(name: str) -> Any:
    path = INJECTION / name
    if not path.exists():
        pytest.skip(f"shared corpus file not found: {path}")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return json.loads(path.read_text(encoding="utf-8"))


def _message(subject: str, body: str, *, subtype: str = "plain", cte: str = "quoted-printable") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.net>"
    msg["To"] = "agent@example.test"
    msg["Subject"] = subject
    msg.set_content(body, subtype=subtype, cte=cte)
    return msg.as_bytes()


def _rejected(raw: bytes) -> bool:
    msg = _PARSER.parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return scan(extract_readable(msg), [GUARD]) is not None


def _split_llmail(entry: str) -> tuple[str, str]:
    subject, sep, body = entry.partition("Body:")
    subject = subject.removeprefix("Subject of the email:").strip()
    return (subject, body.strip()) if sep else ("", entry)


def test_benign_llmail_false_positives() -> None:
    emails = _load("llmail-benign-fp-tests.json")["emails"]
    assert len(emails) == 203
    flagged = [e for e in emails if _rejected(_message(*_split_llmail(e)))]
    print(f"llmail benign: {len(flagged)} false positive(s) of {len(emails)}")
    assert len(flagged) == BENIGN_FALSE_POSITIVES


def test_benign_bipia_email_contexts_false_positives() -> None:
    rows = _load("bipia-email-contexts-train.jsonl")
    flagged = [r for r in rows if _rejected(_message("Your receipt", r["context"]))]
    print(f"bipia contexts: {len(flagged)} false positive(s) of {len(rows)}")
    assert len(flagged) == BIPIA_CONTEXT_FALSE_POSITIVES


def _attacks() -> list[str]:
    data = _load("bipia-text-attacks-train.json")
    return [text for texts in data.values() for text in texts]


def test_bipia_attack_texts_as_they_are() -> None:
    attacks = _attacks()
    assert len(attacks) == 75
    caught = [a for a in attacks if _rejected(_message("Receipt", a))]
    print(f"bipia attacks caught as they are: {len(caught)} of {len(attacks)}")
    assert len(caught) == BIPIA_ATTACKS_CAUGHT_AS_IS


# -- the phrase planted in real mail through each evasion ---------------------------------------

_CYRILLIC = str.maketrans("oeacpi", "оеасрі")


def _zero_width(text: str) -> str:
    return "\u200b".join(text)


def _tag_split_html(context: str, payload: str) -> bytes:
    split = "".join(f"<span>{c}</span>" if i % 3 == 0 else c for i, c in enumerate(payload))
    return _message("Receipt", f"<html><body><p>{context}</p><p>{split}</p></body></html>",
                    subtype="html")


def _hidden_html(context: str, payload: str) -> bytes:
    return _message("Receipt", f"<p>{context}</p><div style=\"display:none\">{payload}</div>",
                    subtype="html", cte="base64")


def _base64_plain(context: str, payload: str) -> bytes:
    return _message("Receipt", f"{context}\n\n{payload}\n", cte="base64")


def _raw(subject: str, cte: str, body: str) -> bytes:
    return (f"From: s@example.net\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n"
            f"\r\n{body}\r\n").encode()


def _qp_soft_breaks(context: str, payload: str) -> bytes:
    soft = "=\r\n".join(payload[i:i + 7] for i in range(0, len(payload), 7))
    clear = quopri.encodestring(context.encode()).decode()
    return _raw("Receipt", "quoted-printable", f"{clear}\r\n{soft}")


def _invisible_and_lookalikes(context: str, payload: str) -> bytes:
    head, _, rest = payload.partition(" ")
    return _message("Receipt", f"{context}\n{_zero_width(head)} {rest.translate(_CYRILLIC)}",
                    cte="base64")


def _encoded_subject(context: str, payload: str) -> bytes:
    subject = base64.b64encode(payload[:120].encode()).decode()
    return _raw(f"=?utf-8?b?{subject}?=", "base64", base64.encodebytes(context.encode()).decode())


def _text_attachment(context: str, payload: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "s@example.net"
    msg["Subject"] = "Receipt"
    msg.set_content(context)
    msg.add_attachment(payload, subtype="plain", filename="notes.txt", cte="base64")
    return msg.as_bytes()


EVASIONS: dict[str, Callable[[str, str], bytes]] = {
    "html tags splitting words": _tag_split_html,
    "hidden html, base64": _hidden_html,
    "base64 text": _base64_plain,
    "quoted-printable soft breaks": _qp_soft_breaks,
    "zero-width and Cyrillic look-alikes": _invisible_and_lookalikes,
    "rfc2047 subject": _encoded_subject,
    "text attachment": _text_attachment,
}


@pytest.mark.parametrize("evasion", list(EVASIONS))
def test_planted_bipia_attacks_are_caught_through_evasions(evasion: str) -> None:
    contexts = [r["context"] for r in _load("bipia-email-contexts-train.jsonl")]
    build = EVASIONS[evasion]
    missed = []
    for i, attack in enumerate(_attacks()):
        phrase = "Ignore previous instructions" if i % 2 else "ignore all instructions"
        payload = f"{phrase} and do this instead: {attack}"
        if not _rejected(build(contexts[i % len(contexts)], payload)):
            missed.append(attack)
    assert missed == []
