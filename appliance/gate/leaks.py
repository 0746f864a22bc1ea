"""What a leaked secret looks like in outgoing mail: the built-in guards no policy can turn off.

An agent that was talked into it (a prompt injection in the mail it read) or
that simply pastes its environment must not mail out the appliance's own
secrets, a private key or a cloud credential. Three kinds of evidence, each
searched in every text the recipient would read:

- the appliance's own secrets (API keys, webhook secrets, the token key…),
  given by the caller: verbatim and case-insensitively, with white space and
  invisible characters removed (a key broken over lines, or with zero-width
  characters inside), hex-encoded, and base64-encoded (standard and URL-safe
  alphabet, at any of the three byte alignments inside a longer blob);
- private keys: PEM (``-----BEGIN … PRIVATE KEY-----``, OpenSSH, PGP);
- credential shapes: AWS access key ids, GitHub, Slack, Stripe, OpenAI and
  Anthropic keys, Google API keys, JWTs (our own capability tokens are JWTs),
  Standard Webhooks ``whsec_`` secrets.

Shapes are also searched inside base64 and hex runs decoded once, so "send it
base64-encoded" does not get a key past, and everything in percent-escaped
text read unescaped (a key in a URL's query). A finding never quotes the secret:
``Leak.detail`` names its kind, where it was, and at most a short prefix of a
credential shape (never of an appliance secret).

Pure: no I/O; the cost is linear in the text (one pass per pattern and form).
"""

from __future__ import annotations

__all__ = ["MIN_SECRET_LENGTH", "Leak", "find_leak"]

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterator, Sequence

import msgspec

from appliance.guards import normalize
from appliance.mail.text import TextPart

MIN_SECRET_LENGTH = 8
"""Appliance secrets shorter than this are not searched for: they would match ordinary words."""

_MIN_ENCODED = 12
"""Shortest base64 core of a secret worth searching (shorter ones match by chance)."""


class Leak(msgspec.Struct, frozen=True, kw_only=True):
    """The first secret found, described without repeating it."""

    kind: str
    """``appliance secret``, ``PEM private key``, ``GitHub token``…"""
    where: str
    """The text it was found in (``subject``, ``text``, ``html``, ``attachment[0]``), and how it was encoded."""
    detail: str
    """For the trace and the audit row: kind, place, and a redacted hint."""


# -- credential shapes ---------------------------------------------------------------------------

_MIXED = "mixed"
"""The key part must hold an upper-case letter, a lower-case letter and a digit (base62 and base64 keys)."""
_ALNUM = "alnum"
"""The key part must hold a letter and a digit (keys in one case, or hex)."""

_SHAPES: list[tuple[str, re.Pattern[str], str | None]] = [
    # (kind, pattern with the random part as group "key", what that part must look like). The checks
    # keep words like "sk-learn-estimators" or "AKIAFAKEEXAMPLEKEYS" from reading as keys.
    ("PEM private key", re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----(?P<key>)"), None),
    ("PuTTY private key", re.compile(r"PuTTY-User-Key-File-\d+:(?P<key>)"), None),
    ("AWS access key id", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)(?P<key>[A-Z0-9]{16})(?![A-Za-z0-9])"),
     _ALNUM),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])gh[pousr]_(?P<key>[A-Za-z0-9]{36,255})"), _MIXED),
    ("GitHub token", re.compile(r"(?<![A-Za-z0-9_])github_pat_(?P<key>[A-Za-z0-9_]{22,255})"), _MIXED),
    ("Slack token", re.compile(r"(?<![A-Za-z0-9_-])xox[abposr]-(?P<key>[A-Za-z0-9-]{10,250})"), _ALNUM),
    ("Slack token", re.compile(r"(?<![A-Za-z0-9_-])xapp-\d-(?P<key>[A-Za-z0-9-]{10,250})"), _ALNUM),
    ("Slack webhook URL", re.compile(r"hooks\.slack\.com/services/(?P<key>T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})"),
     _ALNUM),
    ("Stripe secret key", re.compile(r"(?<![A-Za-z0-9_])[sr]k_live_(?P<key>[A-Za-z0-9]{16,247})"), _MIXED),
    ("Anthropic API key", re.compile(r"(?<![A-Za-z0-9_-])sk-ant-[a-z]{2,8}\d{0,4}-(?P<key>[A-Za-z0-9_-]{20,250})"),
     _MIXED),
    ("OpenAI API key", re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?(?P<key>[A-Za-z0-9_-]{20,250})"),
     _MIXED),
    ("Google API key", re.compile(r"(?<![A-Za-z0-9_-])AIza(?P<key>[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"), _MIXED),
    ("webhook secret", re.compile(r"(?<![A-Za-z0-9_])whsec_(?P<key>[A-Za-z0-9+/=]{20,})"), _MIXED),
    # RFC 7519: a JSON object base64url-encoded starts "eyJ"; header.payload is enough to give a token
    # away (alg "none" tokens have no signature). Our own capability tokens are JWTs.
    ("JSON Web Token", re.compile(r"(?<![A-Za-z0-9_-])eyJ(?P<key>[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,})"), None),
]

_PREFILTER = re.compile(r"BEGIN|PuTTY|A(?:KIA|SIA|BIA|CCA|Iza)|gh[pousr]_|github_pat_|xox|xapp-|hooks\.slack"
                        r"|k_live_|sk-|whsec_|eyJ")
"""A literal every shape contains: one pass finds most texts hold none (15x faster than the shapes)."""
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}(?:\r?\n[A-Za-z0-9+/_-]{4,})*={0,2}")
"""Base64 of 18 bytes or more, wrapped over lines (as MIME writes it) or not."""
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
_WHITE = re.compile(r"\s+")


def _looks_random(key: str, rule: str | None) -> bool:
    if rule is None:
        return True
    digit = any(c.isdigit() for c in key)
    if rule == _ALNUM:
        return digit and any(c.isalpha() for c in key)
    return digit and any(c.isupper() for c in key) and any(c.islower() for c in key)


def _shape(text: str) -> tuple[str, str] | None:
    """The first credential shape in ``text``: (kind, a hint that shows only its fixed prefix)."""
    if _PREFILTER.search(text) is None:
        return None
    for kind, pattern, rule in _SHAPES:
        for match in pattern.finditer(text):
            if not _looks_random(match.group("key"), rule):
                continue
            found = match.group(0)
            prefix = found[: match.start("key") - match.start()]
            if match.group("key"):
                return kind, f"{prefix}… ({len(found)} characters)"
            return kind, found
    return None


def _decoded_runs(text: str) -> Iterator[tuple[str, str]]:
    """Base64 and hex runs in ``text`` decoded once, as (encoding, text), when they decode to UTF-8 text."""
    for match in _BASE64_RUN.finditer(text):
        run = _WHITE.sub("", match.group(0)).rstrip("=")
        if len(run) < 24:
            continue
        url_safe = "-" in run or "_" in run
        try:
            data = (base64.urlsafe_b64decode if url_safe else base64.b64decode)(run + "=" * (-len(run) % 4))
            decoded = data.decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            continue
        yield ("base64url" if url_safe else "base64"), decoded
    for match in _HEX_RUN.finditer(text):
        try:
            yield "hex", bytes.fromhex(match.group(0)).decode("utf-8")
        except ValueError:
            continue


# -- the appliance's own secrets -----------------------------------------------------------------


def _base64_cores(secret: bytes) -> list[str]:
    """What base64 of ``secret`` always contains wherever it starts inside a longer blob.

    Base64 encodes 3 bytes as 4 characters, so the characters depend on the
    secret's alignment: for each of the three alignments, encode it behind 0-2
    filler bytes and keep only the 4-character groups made of the secret alone.
    """
    cores: list[str] = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret).decode("ascii")
        start = 4 if shift else 0  # the group holding filler bytes
        whole = (shift + len(secret)) // 3 * 4  # the groups of 3 bytes of the secret, no padding
        core = encoded[start:whole]
        if len(core) >= _MIN_ENCODED:
            cores.append(core)
    return cores


class _Forms:
    """One text in the forms secrets are searched in, each made once."""

    def __init__(self, text: str) -> None:
        self.normalized = normalize(text)
        self.folded = text.casefold()
        self.compact = _WHITE.sub("", text)
        """Base64 is case-sensitive and may be wrapped: search without white space, case kept."""
        self.compact_folded = self.compact.casefold()
        self.normalized_compact = _WHITE.sub("", self.normalized).casefold()


class _Needles:
    """One appliance secret in every form it is searched in."""

    def __init__(self, index: int, secret: str) -> None:
        self.index = index
        secret = secret.strip()
        self.plain = secret.casefold()
        self.compact = _WHITE.sub("", normalize(secret)).casefold()
        data = secret.encode("utf-8")
        self.hex = data.hex()
        cores = _base64_cores(data)
        self.base64 = [*cores, *{c.replace("+", "-").replace("/", "_") for c in cores} - set(cores)]

    def found_in(self, forms: _Forms) -> str | None:
        """How the secret appears in the text, else None."""
        if self.plain in forms.folded:
            return "verbatim"
        if self.compact and self.compact in forms.normalized_compact:
            return "with white space or invisible characters inside"
        if self.hex in forms.compact_folded:
            return "hex-encoded"
        if any(core in forms.compact for core in self.base64):
            return "base64-encoded"
        return None


def find_leak(parts: Sequence[TextPart], secrets: Sequence[str]) -> Leak | None:
    """The first secret, private key or credential found in ``parts``, or None.

    ``secrets`` are the appliance's own (searched first, in every encoding the
    module docstring lists); then the credential shapes, in each part as
    written, in its normalized form, and inside base64 and hex runs decoded.
    A part with percent-escapes (a key in a URL) is also read unescaped.
    """
    needles = [_Needles(i, s) for i, s in enumerate(secrets) if len(s.strip()) >= MIN_SECRET_LENGTH]
    for part in parts:
        sources = [("", part.text)]
        if "%" in part.text and (unescaped := urllib.parse.unquote(part.text)) != part.text:
            sources.append(("percent-decoded", unescaped))
        for source, text in sources:
            leak = _leak_in(part.where, source, text, needles)
            if leak is not None:
                return leak
    return None


def _leak_in(part: str, source: str, text: str, needles: list[_Needles]) -> Leak | None:
    if not text:
        return None
    forms = _Forms(text)
    where = f"{part} ({source})" if source else part
    for needle in needles:
        how = needle.found_in(forms)
        if how is not None:
            return Leak(kind="appliance secret", where=where,
                        detail=f"appliance secret #{needle.index} found {how} in {where}")
    views = [("", text)]
    if forms.normalized != text:
        views.append(("normalized", forms.normalized))
    for label, view in views:
        found = _shape(view)
        for encoding, decoded in ([] if found else _decoded_runs(view)):
            found = _shape(decoded)
            if found is not None:
                label = f"{encoding}-decoded"
                break
        if found is not None:
            kind, hint = found
            at = f"{where} ({label})" if label else where
            return Leak(kind=kind, where=at, detail=f"{kind} found in {at}: {hint}")
    return None
