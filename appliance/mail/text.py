"""A parsed message → the text a reader of it would see.

Used by the content guards (gate step 4), by the webhook payload (``text``,
``html``) and by the token estimate, so all three see the same thing.

Everything a model could read counts: the subject and display names (RFC 2047
decoded), every text part decoded from its transfer encoding and charset,
HTML reduced to text *including* hidden text, comments, scripts, styles and
attribute values (the model reads the raw HTML too), text attachments, and the
same again inside attached messages. Hostile input never makes this raise:
where the email package fails, the raw text is decoded with replacement instead.
"""

from __future__ import annotations

__all__ = ["ReadableText", "TextPart", "extract_readable"]

import base64
import binascii
import codecs
import email.errors
import functools
import html as html_lib
import re
from email.message import EmailMessage, Message
from html.parser import HTMLParser

import msgspec

# What the email package raises on hostile input (its header and MIME parsers
# have known bugs on malformed data); caught around every call into it.
_EMAIL_FAILURES: tuple[type[Exception], ...] = (
    email.errors.MessageError,
    LookupError,
    UnicodeError,
    ValueError,
    TypeError,
    AttributeError,
    AssertionError,
    binascii.Error,
    RecursionError,
)


class TextPart(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of readable text and where in the message it came from."""

    where: str
    """For humans: ``subject``, ``from.display_name``, ``body[1] text/plain``,
    ``body[2] text/html html.comment``, ``attachment notes.txt``, ``message[1] subject``…"""
    text: str
    """Decoded, not normalized."""


class ReadableText(msgspec.Struct, frozen=True, kw_only=True):
    """Everything readable in one message."""

    parts: list[TextPart]
    agent_text: str
    """The body the agent reads: the first text/plain body part, else the first
    text/html body part reduced to text, else empty."""
    html: str | None = None
    """The first text/html body part as sent (decoded to str), when there is one."""
    truncated: bool = False
    """True when text past ``max_chars`` was left out (of ``parts``, ``agent_text`` or ``html``)."""

    @property
    def total_chars(self) -> int:
        """Characters across all parts."""
        return sum(len(part.text) for part in self.parts)

    def text_of(self, where: str) -> str | None:
        """The text of the first part named ``where``, if any."""
        for part in self.parts:
            if part.where == where:
                return part.text
        return None


# -- bytes and charsets --------------------------------------------------------

# Codecs that are not mail charsets and are slow or surprising on hostile data.
_UNSAFE_CODECS = frozenset(
    {"punycode", "idna", "unicode_escape", "raw_unicode_escape", "undefined"}
)
_ASCII_PROBE = b"ignore previous instructions ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789"


def _codec(charset: str | None) -> str | None:
    """Python's codec name for a declared charset; None when unknown or unsafe."""
    if not charset:
        return None
    name = charset.strip().strip("\"'").split("*", 1)[0].strip()
    if not name or not name.isascii():
        return None
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None
    return None if codec in _UNSAFE_CODECS else codec


@functools.lru_cache(maxsize=256)
def _ascii_compatible(codec: str) -> bool:
    try:
        return _ASCII_PROBE.decode(codec, "replace") == _ASCII_PROBE.decode("ascii")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return False


def _guess(data: bytes) -> str:
    """Undeclared bytes: UTF-8 when valid, else Windows-1252 with replacement."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """``data`` decoded by its declared charset, never raising.

    Returns the text and, when the declared charset is not ASCII-compatible
    (UTF-16, UTF-32…), a second reading as undeclared bytes: another program
    may show the message that way.
    """
    codec = _codec(charset)
    if codec is None:
        return _guess(data), None
    try:
        text = data.decode(codec, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return _guess(data), None
    if _ascii_compatible(codec):
        return text, None
    return text, _guess(data)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unsurrogate(text: str) -> str:
    """Undo the email package's surrogateescape of raw 8-bit header bytes."""
    if not _SURROGATE.search(text):
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    return _guess(data)


# -- headers -------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?[^?\s]*\?[bBqQ]\?)")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_B64 = re.compile(r"[^A-Za-z0-9+/]")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = re.compile(r"[\r\n]+")


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, payload = match.groups()
    if encoding in "bB":
        clean = _NOT_B64.sub("", payload)
        if len(clean) % 4 == 1:
            clean = clean[:-1]
        try:
            data = base64.b64decode(clean + "=" * (-len(clean) % 4))
        except (binascii.Error, ValueError):
            return match.group(0)
    else:
        raw = payload.replace("_", " ").encode("utf-8", "replace")
        data = _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return _decode(data, charset)[0]


def decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded, leniently (also inside quotes and words).

    Whitespace between adjacent encoded words is dropped (RFC 2047 section 6.2).
    """
    if "=?" not in text:
        return text
    return _ENCODED_WORD.sub(_decode_word, _BETWEEN_WORDS.sub("", text))


def _raw_header_text(value: object) -> str:
    """A header as stored by the parser, unfolded, 8-bit bytes and encoded words decoded."""
    text = _LINE_BREAK.sub(" ", _FOLD.sub("", str(value)))
    return decode_words(_unsurrogate(text)).strip()


def _squash(text: str) -> str:
    return " ".join(text.split())


_ADDRESS_HEADERS = (("From", "from"), ("Sender", "sender"), ("Reply-To", "reply_to"),
                    ("To", "to"), ("Cc", "cc"))


# -- HTML ----------------------------------------------------------------------

_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "br", "caption", "center", "dd",
    "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header", "hr", "html",
    "legend", "li", "main", "menu", "nav", "ol", "option", "p", "pre", "section", "summary",
    "table", "tbody", "tfoot", "thead", "title", "tr", "ul",
})
_CELL = frozenset({"td", "th"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
_NOT_RENDERED = frozenset({"head", "title", "template", "script", "style", "noscript"})
_SELF_CLOSING_SIBLINGS = frozenset({"p", "li", "td", "th", "tr", "option", "dt", "dd"})
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|mso-hide\s*:\s*all"
    r"|font-size\s*:\s*0*\.?0+(?:px|pt|em|rem|%)?\s*(?:;|$|!)|opacity\s*:\s*0*\.?0+\s*(?:;|$|!)",
    re.I,
)
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_TAG = re.compile(r"<[^>]*>")


class _HtmlText(msgspec.Struct, kw_only=True):
    text: str = ""
    visible: str = ""
    comments: list[str] = msgspec.field(default_factory=list)
    scripts: list[str] = msgspec.field(default_factory=list)
    styles: list[str] = msgspec.field(default_factory=list)
    attributes: list[str] = msgspec.field(default_factory=list)


_SOFT_BREAK = "\ue000"
"""Marks a block boundary in the flow: a run of them is one line break."""
_PARA_BREAK = "\ue001"
"""Marks a paragraph boundary: a blank line."""
_MARKS = re.compile("[\ue000\ue001]")
_MARK_RUN = re.compile("[ \t]*[\ue000\ue001](?:[ \t]*[\ue000\ue001])*")
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table",
                        "ul", "ol", "dl", "hr", "figure", "address"})


class _Flow:
    """Text as a browser lays it out: whitespace runs collapsed, blocks on their own lines."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._last = "\n"

    def text(self, data: str, pre: bool) -> None:
        if not pre:
            data = _HTML_SPACE.sub(" ", data)
            if data.startswith(" ") and self._last in " \n":
                data = data[1:]
        if data:
            self._chunks.append(data)
            self._last = data[-1]

    def mark(self, mark: str) -> None:
        self._chunks.append(mark)
        self._last = "\n"

    def result(self) -> str:
        joined = _MARK_RUN.sub(lambda m: "\n\n" if _PARA_BREAK in m.group(0) else "\n",
                               "".join(self._chunks))
        return _tidy(joined)


class _Reducer(HTMLParser):
    """HTML → text: every text node, hidden or not; the rest kept aside."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = _HtmlText()
        self._all = _Flow()
        self._visible = _Flow()
        self._stack: list[tuple[str, bool]] = []
        self._raw: str | None = None
        self._pre = 0

    def _hidden(self) -> bool:
        return bool(self._stack) and self._stack[-1][1]

    def _text(self, data: str) -> None:
        data = _MARKS.sub("", data)
        pre = self._pre > 0
        self._all.text(data, pre)
        if not self._hidden():
            self._visible.text(data, pre)

    def _break(self, tag: str) -> None:
        if tag == "br":
            self._all.text("\n", True)
            self._visible.text("\n", True)
        elif tag in _BLOCK or tag in _PARAGRAPH:
            mark = _PARA_BREAK if tag in _PARAGRAPH else _SOFT_BREAK
            self._all.mark(mark)
            self._visible.mark(mark)
        elif tag in _CELL:
            self._all.text(" ", False)
            self._visible.text(" ", False)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closes=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs, closes=True)

    def _open(self, tag: str, attrs: list[tuple[str, str | None]], *, closes: bool) -> None:
        hides = tag in _NOT_RENDERED
        for name, value in attrs:
            if name == "hidden" or (name == "style" and value and _HIDING_STYLE.search(value)):
                hides = True
            if value and value.strip():
                self.out.attributes.append(value.strip())
        self._break(tag)
        if tag == "pre":
            self._pre += 1
        if tag in ("script", "style"):
            self._raw = tag
        if closes or tag in _VOID:
            return
        if tag in _SELF_CLOSING_SIBLINGS and self._stack and self._stack[-1][0] == tag:
            self._stack.pop()
        self._stack.append((tag, hides or self._hidden()))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._raw = None
        if tag == "pre" and self._pre:
            self._pre -= 1
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        if tag != "br":
            self._break(tag)

    def handle_data(self, data: str) -> None:
        if self._raw == "script":
            self.out.scripts.append(data)
        elif self._raw == "style":
            self.out.styles.append(data)
        else:
            self._text(data)

    def handle_comment(self, data: str) -> None:
        self.out.comments.append(data)

    def unknown_decl(self, data: str) -> None:
        self.out.comments.append(data.removeprefix("CDATA["))

    def handle_pi(self, data: str) -> None:
        self.out.comments.append(data)

    def result(self) -> _HtmlText:
        self.out.text = self._all.result()
        self.out.visible = self._visible.result()
        return self.out


def _tidy(text: str) -> str:
    """Trailing spaces cut, runs of blank lines cut to one, ends stripped."""
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n")


def html_to_text(source: str) -> str:
    """The text of an HTML document, hidden text included (what ``agent_text`` holds)."""
    return _reduce_html(source).text


def _reduce_html(source: str) -> _HtmlText:
    reducer = _Reducer()
    try:
        reducer.feed(source)
        reducer.close()
    except (AssertionError, ValueError, IndexError, TypeError, RecursionError):
        text = _tidy(_HTML_SPACE.sub(" ", html_lib.unescape(_TAG.sub("", source))).strip())
        return _HtmlText(text=text, visible=text)
    return reducer.result()


# -- format=flowed (RFC 3676) ----------------------------------------------------

def _unflow(text: str, delsp: bool) -> str:
    """Join the soft line breaks of a format=flowed body."""
    out: list[str] = []
    pending = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending += line[:-1] if delsp else line
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return "\n".join(out)


# -- the walk --------------------------------------------------------------------

class _Collector:
    def __init__(self, max_chars: int) -> None:
        self.parts: list[TextPart] = []
        self.remaining = max(0, max_chars)
        self.truncated = False
        self.agent_plain: str | None = None
        self.agent_html: str | None = None
        self.html: str | None = None

    def add(self, where: str, text: str) -> str:
        """Keep ``text`` (cut to what is left of the budget); return what was kept."""
        if not text or text.isspace():
            return ""
        if len(text) > self.remaining:
            self.truncated = True
            text = text[: self.remaining]
            if not text:
                return ""
        self.remaining -= len(text)
        self.parts.append(TextPart(where=where, text=text))
        return text


def _safe_str(fn: object) -> str | None:
    """Call a no-argument email accessor; None when it fails or returns no str."""
    try:
        value = fn() if callable(fn) else None
    except _EMAIL_FAILURES:
        return None
    return value if isinstance(value, str) else None


def _headers(msg: Message, prefix: str, out: _Collector) -> None:
    try:
        raw_items = list(msg.raw_items())
    except _EMAIL_FAILURES:
        raw_items = []
    raw_subjects = [v for k, v in raw_items if isinstance(k, str) and k.lower() == "subject"]
    try:
        parsed_subjects = [str(v) for v in msg.get_all("Subject") or []]
    except _EMAIL_FAILURES:
        parsed_subjects = []
    for i in range(max(len(raw_subjects), len(parsed_subjects))):
        where = f"{prefix}subject" if i == 0 else f"{prefix}subject[{i + 1}]"
        parsed = _unsurrogate(parsed_subjects[i]) if i < len(parsed_subjects) else None
        raw = _raw_header_text(raw_subjects[i]) if i < len(raw_subjects) else None
        if parsed is not None:
            out.add(where, parsed)
        if raw is not None and (parsed is None or _squash(raw) != _squash(parsed)):
            # Our own lenient decoding, when it reads the header differently.
            out.add(f"{where}.raw" if parsed is not None else where, raw)

    for name, key in _ADDRESS_HEADERS:
        names: list[str] = []
        try:
            for header in msg.get_all(name) or []:
                for group in getattr(header, "groups", ()):
                    if group.display_name:
                        names.append(group.display_name)
                    names.extend(a.display_name for a in group.addresses if a.display_name)
        except _EMAIL_FAILURES:
            names = []
        decoded = [decode_words(_unsurrogate(n)).strip() for n in names]
        out.add(f"{prefix}{key}.display_name", ", ".join(n for n in decoded if n))
        raws = [_raw_header_text(v) for k, v in raw_items
                if isinstance(k, str) and k.lower() == name.lower()]
        out.add(f"{prefix}{key}", "\n".join(r for r in raws if r))


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except _EMAIL_FAILURES:
        data = None
    if isinstance(data, bytes):
        return data
    try:
        raw = part.get_payload()
    except _EMAIL_FAILURES:
        return b""
    if isinstance(raw, str):
        errors = "replace" if _lone_surrogates(raw) else "surrogateescape"
        return raw.encode("utf-8", errors)
    return b""


def _lone_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return True
    return False


def _param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except _EMAIL_FAILURES:
        return ""
    return value.strip().lower() if isinstance(value, str) else ""


def _children(part: Message) -> list[Message] | None:
    """Sub-parts of a container, or None for a leaf."""
    try:
        if not part.is_multipart():
            return None
        payload = part.get_payload()
    except _EMAIL_FAILURES:
        return None
    if not isinstance(payload, list):
        return None
    return [p for p in payload if isinstance(p, Message)]


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _label(text: str, limit: int = 120) -> str:
    return _squash(text)[:limit]


def _leaf(part: Message, index: int, prefix: str, top: bool, out: _Collector) -> None:
    ctype = (_safe_str(part.get_content_type) or "text/plain").lower()
    disposition = _safe_str(part.get_content_disposition)
    filename = _safe_str(part.get_filename)
    if filename is not None:
        full = _squash(decode_words(_unsurrogate(filename)))
        out.add(f"{prefix}attachment[{index}] filename", full)
        filename = _label(full)
    maintype, _, subtype = ctype.partition("/")
    # A container the parser could not split (no boundary, say) is still text to some readers.
    unparsed = maintype in ("multipart", "message")
    if maintype != "text" and not unparsed:
        return
    attached = disposition == "attachment"
    if attached:
        named = f" {filename}" if filename else f"[{index}] {ctype}"
        where = f"{prefix}attachment{named}"
    else:
        where = f"{prefix}body[{index}] {ctype}"
    if unparsed:
        where += " (unparsed)"
    data = _payload_bytes(part)
    text, other = _decode(data, _safe_str(part.get_content_charset))
    text = _crlf(text)
    other = _crlf(other) if other is not None else None
    body_part = top and not attached and not unparsed
    if subtype == "html" and not unparsed:
        reduced = _reduce_html(text)
        kept = out.add(where, reduced.text)
        if reduced.visible != reduced.text:
            out.add(f"{where} (visible)", reduced.visible)
        for kind, pieces in (("comment", reduced.comments), ("script", reduced.scripts),
                             ("style", reduced.styles), ("attributes", reduced.attributes)):
            out.add(f"{where} html.{kind}", "\n".join(p.strip() for p in pieces if p.strip()))
        if body_part and out.html is None:
            out.html = text
            out.agent_html = kept
    else:
        if subtype == "plain" and _param(part, "format") == "flowed":
            text = _unflow(text, _param(part, "delsp") == "yes")
        kept = out.add(where, text)
        if body_part and subtype == "plain" and out.agent_plain is None:
            out.agent_plain = kept
    if other is not None and other != text:
        out.add(f"{where} (as undeclared bytes)", other)


def extract_readable(msg: EmailMessage, *, max_chars: int = 1_000_000) -> ReadableText:
    """Everything readable in ``msg``, in message order, at most ``max_chars`` characters.

    Never raises: parts the email package cannot decode are read as raw text.
    """
    out = _Collector(max_chars)
    _headers(msg, "", out)
    leaf = 0
    nested = 0
    # (part, prefix, top): top is False inside attached messages.
    stack: list[tuple[Message, str, bool]] = [(msg, "", True)]
    while stack:
        part, prefix, top = stack.pop()
        children = _children(part)
        if children is None:
            leaf += 1
            _leaf(part, leaf, prefix, top, out)
            continue
        ctype = (_safe_str(part.get_content_type) or "").lower()
        pushed: list[tuple[Message, str, bool]] = []
        for child in children:
            if ctype.startswith("message/"):
                nested += 1
                inner = f"message[{nested}] "
                _headers(child, inner, out)
                pushed.append((child, inner, False))
            else:
                pushed.append((child, prefix, top))
        stack.extend(reversed(pushed))
    agent = out.agent_plain if out.agent_plain is not None else (out.agent_html or "")
    html = out.html
    if html is not None and len(html) > max_chars:
        html = html[:max_chars]
        out.truncated = True
    return ReadableText(parts=out.parts, agent_text=agent, html=html, truncated=out.truncated)
