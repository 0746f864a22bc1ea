"""Readers for the shared public test corpus in ``../shared/corpus`` (read in place, never copied).

Tests that need a file call ``corpus_path(...)``, which skips the test cleanly
when the corpus is not there.
"""

from __future__ import annotations

__all__ = [
    "CORPUS",
    "KeyedMessage",
    "SmtpTranscript",
    "ZoneFile",
    "corpus_path",
    "read_keyed_message",
    "read_smtp_transcript",
    "read_zonefile",
]

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dnsserver import DnsTestServer, Record, reverse_name

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_path(*parts: str) -> Path:
    """A file or folder of the corpus; skips the calling test when it is missing."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared corpus file not found: {path}")
    return path


# -- mail-auth-dkim / mail-auth-arc: "name value" lines, a blank line, the message ------------

@dataclass(frozen=True)
class KeyedMessage:
    """A message with the DNS TXT records that verify it."""

    records: list[tuple[str, str]]
    """(name, TXT value) pairs."""
    message: bytes

    def zone(self, ttl: int = 300) -> list[Record]:
        return [Record(name, "TXT", value, ttl) for name, value in self.records]


def read_keyed_message(path: Path) -> KeyedMessage:
    data = path.read_bytes()
    parts = re.split(rb"\r?\n\r?\n", data, maxsplit=1)
    if len(parts) != 2:
        raise ValueError(f"{path}: no blank line between the DNS records and the message")
    head, message = parts
    records = []
    for line in head.decode("utf-8").splitlines():
        if line.strip():
            name, _, value = line.strip().partition(" ")
            records.append((name, value.strip()))
    return KeyedMessage(records=records, message=message)


# -- auth-milter/zonefile: BIND-like lines; ";ERROR,name,type,RCODE" marks failing lookups ----

_TYPES = {"A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "SOA", "SPF"}


@dataclass(frozen=True)
class ZoneFile:
    records: list[Record]
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, type, RCODE) of lookups that fail; PTR names are already reversed."""

    def serve(self, **options: object) -> DnsTestServer:
        """A (not yet started) loopback server for this zone, failures included."""
        server = DnsTestServer(self.records, **options)  # type: ignore[arg-type]
        for name, rdtype, rcode in self.errors:
            how = {"NXDOMAIN": "nxdomain", "SERVFAIL": "servfail", "REFUSED": "refused"}.get(
                rcode.upper(), "timeout")
            server.fail(name, rdtype, how)  # type: ignore[arg-type]
        return server


def read_zonefile(path: Path) -> ZoneFile:
    records: list[Record] = []
    errors: list[tuple[str, str, str]] = []
    for line in path.read_text("utf-8").splitlines():
        text = line.strip()
        if text.startswith(";ERROR,"):
            _, name, rdtype, rcode = [p.strip() for p in text.split(",", 3)]
            if rdtype.upper() == "PTR" and re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", name):
                name = reverse_name(name)  # the milter's mock takes PTR queries by IP
            errors.append((name.rstrip("."), rdtype.upper(), rcode.upper()))
            continue
        if not text or text.startswith(";"):
            continue
        lexer = shlex.shlex(text, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = [t for t in lexer if t not in ("(", ")")]
        name, rest = tokens[0], tokens[1:]
        ttl = 300
        if rest and rest[0].isdigit():
            ttl, rest = int(rest[0]), rest[1:]
        if rest and rest[0].upper() == "IN":
            rest = rest[1:]
        if not rest or rest[0].upper() not in _TYPES:
            raise ValueError(f"{path}: cannot read zone line {line!r}")
        rdtype, rdata = rest[0].upper(), rest[1:]
        # TXT: each quoted or bare word is one character-string; a record's strings are
        # concatenated by the reader (RFC 7208 3.3), as the milter's resolver does.
        value = (tuple(rdata) or ("",)) if rdtype == "TXT" else " ".join(rdata)
        records.append(Record(name.rstrip("."), rdtype, value, ttl))
    return ZoneFile(records=records, errors=errors)


# -- auth-milter/expected/*.smtp.eml: the SMTP session the milter was tested with -------------

@dataclass(frozen=True)
class SmtpTranscript:
    client_ip: str
    helo: str
    mail_from: str
    rcpt_to: list[str]
    authentication_results: dict[str, list[str]]
    """The first Authentication-Results the milter added: method -> result words in order."""


def read_smtp_transcript(path: Path) -> SmtpTranscript:
    text = path.read_text("utf-8", "replace")
    client_ip = helo = mail_from = ""
    rcpt: list[str] = []
    for line in text.splitlines():
        if line.startswith("XFORWARD ADDR="):
            client_ip = line.partition("=")[2].strip()
        elif line.startswith("XFORWARD HELO="):
            helo = line.partition("=")[2].strip()
        elif line.upper().startswith("MAIL FROM:"):
            mail_from = line[len("MAIL FROM:"):].strip().split(" ")[0].strip("<>")
        elif line.upper().startswith("RCPT TO:"):
            rcpt.append(line[len("RCPT TO:"):].strip().strip("<>"))
        elif line == "DATA":
            break
    results: dict[str, list[str]] = {}
    found = re.search(r"^Authentication-Results:(.*(?:\n[ \t].*)*)", text, re.MULTILINE)
    if found:
        unfolded = re.sub(r"\s+", " ", found[1])
        for clause in unfolded.split(";")[1:]:
            word = re.match(r"\s*([\w.-]+)=(\w+)", clause)
            if word:
                results.setdefault(word[1].lower(), []).append(word[2].lower())
    return SmtpTranscript(client_ip=client_ip, helo=helo, mail_from=mail_from, rcpt_to=rcpt,
                          authentication_results=results)
