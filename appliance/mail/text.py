"""A parsed message → the text a reader of it would see.

Used by the content guards (gate step 4), by the webhook payload (``text``,
``html``) and by the token estimate, so all three see the same thing.

Everything a model could read counts:

- the subject and display names (RFC 2047 decoded);
- every part whose bytes are text: text/* decoded from its transfer encoding
  and charset, and any other part (application/octet-stream, JSON, XML, SVG…)
  whose bytes decode as text (see :func:`decodes_as_text`); binary parts are
  skipped;
- the MIME parameters that name a part (Content-Type ``name``,
  Content-Disposition ``filename``, RFC 2231 or RFC 2047 encoded) and its
  Content-Description;
- the preamble and epilogue of every multipart;
- HTML (and XML, SVG) both as markup and as text: the markup as delivered,
  the markup with entities, CSS and JavaScript escapes and URL encoding
  decoded, the text a browser lays out *including* hidden text, the visible
  text alone, comments, scripts, styles, attribute names and values, CSS
  ``content`` strings, and ``srcdoc`` documents read as HTML in turn;
- the same again inside attached messages: message/rfc822 in any transfer
  encoding, and .eml files attached as octet-stream.

HTML is parsed by Lexbor (selectolax), an HTML5 parser in C: what it builds
is what a browser builds, and it is linear on hostile input where the
standard library's ``html.parser`` is quadratic (unclosed tags).

Hostile input never makes this raise, except for structure beyond the limits
(:class:`~appliance.errors.MessageTooComplex`: more than ``max_parts`` MIME
parts, nesting deeper than ``max_depth``, srcdoc deeper than
``MAX_SRCDOC_DEPTH``, HTML an HTML5 tree builder would build quadratically,
see ``_Shape``): where the email package fails, the
raw text is decoded with replacement instead. Text past ``max_chars`` is cut
and the result marked ``truncated`` (the gate refuses such a message).
"""

from __future__ import annotations

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_PARTS",
    "ReadableText",
    "TextPart",
    "decode_words",
    "decodes_as_text",
    "extract_readable",
    "html_to_text",
    "strip_tag_characters",
]

import base64
import binascii
import codecs
import email.errors
import email.parser
import email.policy
import email.utils
import functools
import html as html_lib
import quopri
import re
import urllib.parse
from email.message import EmailMessage, Message

import msgspec
from selectolax.lexbor import LexborDocumentOptions, LexborHTMLParser, LexborNode, SelectolaxError

from appliance.errors import MessageTooComplex

MAX_CHARS = 1_000_000
"""Default limit on the text read from one message (``truncated`` past it)."""
MAX_PARTS = 1_000
"""Default limit on MIME parts in one message, attached messages' parts included."""
MAX_DEPTH = 50
"""Default limit on MIME nesting (multiparts and attached messages), and on srcdoc documents in HTML."""
MAX_SRCDOC_DEPTH = 8
"""srcdoc documents inside srcdoc documents: each level is read again as HTML."""

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
    derived: bool = False
    """A view of text kept in another part (HTML reduced, escapes decoded): scanned, not counted twice."""


class ReadableText(msgspec.Struct, frozen=True, kw_only=True):
    """Everything readable in one message."""

    parts: list[TextPart]
    agent_text: str
    """The body the agent reads: the first text/plain body part, else the first
    text/html body part reduced to text, else empty. Unicode tag characters removed."""
    html: str | None = None
    """The first text/html body part as sent (decoded to str), when there is one.
    Unicode tag characters removed."""
    truncated: bool = False
    """True when text past ``max_chars`` was left out (of ``parts``, ``agent_text`` or ``html``)."""
    read_chars: int = 0
    """Characters read from the message and counted against ``max_chars``: the decoded
    text of headers and parts. Views derived from them (HTML reduced to text, decoded
    markup…) are in ``parts`` but not counted: each is bounded by its source."""

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


# -- text that is not text/* ------------------------------------------------------

_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
"""Control characters a text file does not hold (tab, line ends, form feed and ESC allowed)."""
_CONTROL_SHARE = 100
""""Few control characters": at most one in this many."""
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decodes_as_text(data: bytes, charset: str | None = None) -> str | None:
    """``data`` as text when it is text, else None (binary).

    Text means: it decodes without error as its declared charset, or as UTF-8
    (UTF-16/32 when it starts with their byte order mark), and at most one
    character in a hundred is a control character other than tab, line ends,
    form feed and ESC (ISO-2022 uses it). Random or compressed bytes fail the
    first test almost always, and a single-byte charset's decoding of binary
    fails the second.
    """
    if not data:
        return None
    candidates: list[str] = []
    declared = _codec(charset)
    if declared is not None:
        candidates.append(declared)
    candidates.extend(codec for bom, codec in _BOMS if data.startswith(bom))
    candidates.append("utf-8")
    for codec in dict.fromkeys(candidates):
        try:
            text = data.decode(codec)
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
        if _CONTROLS.subn("", text)[1] * _CONTROL_SHARE <= len(text):
            return text
    return None


_MARKUP_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml",
                           "image/svg+xml"})


def _is_markup(ctype: str) -> bool:
    return ctype in _MARKUP_TYPES or ctype.endswith("+xml")


_HEADER_LINE = re.compile(r"[!-9;-~]{1,76}:[ \t]")
_MESSAGE_HEADERS = re.compile(r"(?im)^(?:from|subject|content-type|mime-version|message-id|received|date):")


def _looks_like_message(text: str, filename: str | None) -> bool:
    """An RFC 5322 message sent as a file (an .eml as octet-stream or text/plain)."""
    if filename and filename.lower().endswith(".eml"):
        return True
    head = text[:65_536]
    end = head.find("\n\n")
    return (end > 0 and _HEADER_LINE.match(head) is not None
            and _MESSAGE_HEADERS.search(head, 0, end) is not None)


# -- decoding what markup and code escape ---------------------------------------------

_CODE_ESCAPE = re.compile(
    r"\\u\{([0-9a-fA-F]{1,6})\}|\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})"  # JavaScript, JSON
    r"|\\([0-9a-fA-F]{1,6})[ \t\n\r\f]?"  # CSS: \69 gnore
    r"|\\([^\n\r\f0-9a-fA-F])"  # CSS: any other character escaped
)


def _code_point(digits: str) -> str:
    cp = int(digits, 16)
    return chr(cp) if 0 < cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF else "\ufffd"


def _code_char(match: re.Match[str]) -> str:
    digits = match.group(1) or match.group(2) or match.group(3) or match.group(4)
    return _code_point(digits) if digits else match.group(5)


def unescape_code(text: str) -> str:
    """CSS (``\\69 gnore``), JavaScript and JSON (``\\u0069``, ``\\x69``, ``\\u{69}``) escapes decoded."""
    return _CODE_ESCAPE.sub(_code_char, text) if "\\" in text else text


def _unescape_markup(text: str) -> str:
    """What a browser decodes: character references, then CSS/JS escapes, then URL encoding.

    Each step is one linear pass; ``+`` reads as a space where URL encoding is found.
    """
    if "&" in text:
        text = html_lib.unescape(text)
    text = unescape_code(text)
    if "%" in text:
        text = urllib.parse.unquote_plus(text, errors="replace")
    return text


# CSS ``content`` values: strings may be unterminated (then they end at the line), and every
# quantifier is possessive, so a value is read once whatever it holds.
_CSS_CONTENT = re.compile(
    r"""content\s*+:((?:"(?:[^"\\\n]|\\.)*+"?|'(?:[^'\\\n]|\\.)*+'?|[^;}"'])*+)""", re.I | re.S)
_CSS_STRING = re.compile(r""""((?:[^"\\\n]|\\.)*+)"?|'((?:[^'\\\n]|\\.)*+)'?""", re.S)


def _css_content(css: str) -> list[str]:
    """The strings of every ``content:`` declaration, escapes decoded, as the page shows them."""
    if "content" not in css.lower():
        return []
    found: list[str] = []
    for declaration in _CSS_CONTENT.finditer(css):
        strings = [m.group(1) if m.group(1) is not None else (m.group(2) or "")
                   for m in _CSS_STRING.finditer(declaration.group(1))]
        shown = unescape_code("".join(strings))
        if shown.strip():
            found.append(shown)
    return found


# -- HTML ----------------------------------------------------------------------

_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "br", "caption", "center", "dd",
    "details", "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure",
    "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header", "hr", "html",
    "legend", "li", "main", "menu", "nav", "ol", "option", "p", "pre", "section", "summary",
    "table", "tbody", "tfoot", "thead", "title", "tr", "ul", "textarea", "listing", "plaintext",
})
_CELL = frozenset({"td", "th"})
_NOT_RENDERED = frozenset({"head", "title", "template", "script", "style", "noscript", "iframe",
                           "noembed", "noframes"})
_PRESERVE = frozenset({"pre", "textarea", "listing", "plaintext", "xmp"})
_HIDING_STYLE = re.compile(
    r"display\s*+:\s*+none|visibility\s*+:\s*+(?:hidden|collapse)|mso-hide\s*+:\s*+all"
    r"|(?:font-size|opacity)\s*+:\s*+(?:0++(?:\.0*+)?|\.0++)(?![0-9.])",
    re.I,
)
_HTML_SPACE = re.compile(r"[ \t\r\n\f]+")
_TAG = re.compile(r"<[^<>]*>")


class _HtmlText(msgspec.Struct, kw_only=True):
    text: str = ""
    visible: str = ""
    comments: list[str] = msgspec.field(default_factory=list)
    scripts: list[str] = msgspec.field(default_factory=list)
    styles: list[str] = msgspec.field(default_factory=list)
    attributes: list[str] = msgspec.field(default_factory=list)
    attribute_names: list[str] = msgspec.field(default_factory=list)
    css_content: list[str] = msgspec.field(default_factory=list)
    srcdocs: list[_HtmlText] = msgspec.field(default_factory=list)


_SOFT_BREAK = "\ue000"
"""Marks a block boundary in the flow: a run of them is one line break."""
_PARA_BREAK = "\ue001"
"""Marks a paragraph boundary: a blank line."""
_MARK_CHARS = _SOFT_BREAK + _PARA_BREAK
_MARKS = re.compile("[\ue000\ue001]")
_MARK_RUN = re.compile("[\ue000\ue001]+")
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table",
                        "ul", "ol", "dl", "hr", "figure", "address"})


class _Flow:
    """Text as a browser lays it out: whitespace runs collapsed, blocks on their own lines."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._last = "\n"

    def text(self, data: str, pre: bool, collapsed: bool = False) -> None:
        if not pre:
            if not collapsed:
                data = _HTML_SPACE.sub(" ", data)
            if data.startswith(" ") and self._last in " \n":
                data = data[1:]
        if data:
            self._chunks.append(data)
            self._last = data[-1]

    def mark(self, mark: str) -> None:
        # Spaces and tabs before a block boundary are cut (each chunk is cut at most once).
        chunks = self._chunks
        while chunks and chunks[-1] not in _MARK_CHARS:
            kept = chunks[-1].rstrip(" \t")
            if kept:
                chunks[-1] = kept
                break
            chunks.pop()
        chunks.append(mark)
        self._last = "\n"

    def result(self) -> str:
        joined = _MARK_RUN.sub(lambda m: "\n\n" if _PARA_BREAK in m.group(0) else "\n",
                               "".join(self._chunks))
        return _tidy(joined)


def _tidy(text: str) -> str:
    """Trailing spaces cut, runs of blank lines cut to one, ends stripped."""
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n")


def _kids(node: LexborNode) -> list[LexborNode]:
    kids: list[LexborNode] = []
    child = node.first_child
    while child is not None:
        kids.append(child)
        child = child.next
    return kids


class _Reducer:
    """One HTML document → its texts, by a walk of the tree Lexbor builds (no recursion)."""

    def __init__(self, depth: int) -> None:
        self.out = _HtmlText()
        self.depth = depth
        self.all = _Flow()
        self.visible = _Flow()

    def _break(self, tag: str) -> None:
        if tag == "br":
            self.all.text("\n", True)
            self.visible.text("\n", True)
        elif tag in _BLOCK or tag in _PARAGRAPH:
            mark = _PARA_BREAK if tag in _PARAGRAPH else _SOFT_BREAK
            self.all.mark(mark)
            self.visible.mark(mark)
        elif tag in _CELL:
            self.all.text(" ", False)
            self.visible.text(" ", False)

    def _attributes(self, node: LexborNode) -> bool:
        """Keep the element's attributes; True when they hide it."""
        hides = False
        out = self.out
        for name, value in node.attributes.items():
            out.attribute_names.append(name)
            if name == "hidden":
                hides = True
            if not value or not value.strip():
                continue
            out.attributes.append(value.strip())
            if name == "style":
                hides = hides or _HIDING_STYLE.search(value) is not None
                out.css_content.extend(_css_content(value))
            elif name == "srcdoc":
                if self.depth >= MAX_SRCDOC_DEPTH:
                    raise MessageTooComplex(f"HTML srcdoc documents nested deeper than {MAX_SRCDOC_DEPTH}")
                out.srcdocs.append(_reduce_html(value, self.depth + 1))
        return hides

    def walk(self, document: LexborNode) -> None:
        # (node, hidden, pre): a node to enter, or an element's tag name to leave it.
        stack: list[tuple[LexborNode | str, bool, int]] = [(n, False, 0) for n in reversed(_kids(document))]
        out = self.out
        while stack:
            node, hidden, pre = stack.pop()
            if isinstance(node, str):
                if node != "br":
                    self._break(node)
                continue
            if node.is_text_node:
                data = node.text_content or ""
                if _MARK_CHARS[0] in data or _MARK_CHARS[1] in data:
                    data = _MARKS.sub("", data)
                if not pre:
                    data = _HTML_SPACE.sub(" ", data)
                self.all.text(data, pre > 0, collapsed=True)
                if not hidden:
                    self.visible.text(data, pre > 0, collapsed=True)
                continue
            if node.is_comment_node:
                comment = node.comment_content or ""
                if comment.startswith("[CDATA["):
                    comment = comment[7:].removesuffix("]]")
                out.comments.append(comment)
                continue
            if not node.is_element_node:
                stack.extend((n, hidden, pre) for n in reversed(_kids(node)))
                continue
            tag = node.tag or ""
            hides = self._attributes(node) or hidden or tag in _NOT_RENDERED
            if tag in ("script", "style"):
                body = node.text(deep=True)
                (out.scripts if tag == "script" else out.styles).append(body)
                if tag == "style":
                    out.css_content.extend(_css_content(body))
                continue
            self._break(tag)
            inner = pre + 1 if tag in _PRESERVE else pre
            stack.append((tag, hides, pre))
            if tag == "template":
                for fragment in reversed(node.template_fragments()):
                    stack.extend((n, True, inner) for n in reversed(_kids(fragment)))
            stack.extend((n, hides, inner) for n in reversed(_kids(node)))

    def result(self) -> _HtmlText:
        self.out.text = self.all.result()
        self.out.visible = self.visible.result()
        return self.out


MAX_HTML_DEPTH = 1_000
"""HTML elements open inside one another (Blink flattens past 512)."""
MAX_HTML_CLONES = 250_000
"""Formatting elements an HTML5 parser would re-create ("reconstruct the active formatting elements")."""

_FORMATTING = frozenset({"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong",
                         "tt", "u"})
_VOID_TAGS = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image",
                        "img", "input", "keygen", "link", "meta", "param", "source", "track", "wbr"})
_RAW_TAGS = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_TABLE_PARTS = frozenset({"tbody", "thead", "tfoot", "tr", "td", "th", "caption", "colgroup"})
_SECTIONS = frozenset({"tbody", "thead", "tfoot", "caption", "colgroup"})
_CLOSES: dict[str, tuple[str, frozenset[str]]] = {
    "li": ("list", frozenset({"li"})), "dd": ("list", frozenset({"dd", "dt"})), "dt": ("list", frozenset({"dd", "dt"})),
    "tr": ("table", frozenset({"tr"})), "td": ("table", frozenset({"td", "th"})),
    "th": ("table", frozenset({"td", "th"})), "tbody": ("table", _SECTIONS), "thead": ("table", _SECTIONS),
    "tfoot": ("table", _SECTIONS), "caption": ("table", _SECTIONS), "colgroup": ("table", _SECTIONS),
    "p": ("default", frozenset({"p"})), "a": ("default", frozenset({"a"})), "nobr": ("default", frozenset({"nobr"})),
    "button": ("default", frozenset({"button"})), "select": ("default", frozenset({"select"})),
    "option": ("top", frozenset({"option"})), "optgroup": ("top", frozenset({"option", "optgroup"})),
    **dict.fromkeys(_HEADINGS, ("top", _HEADINGS)),
}
"""Start tags that first close an open element of these names, and where HTML5 looks for it: in
scope (``default``), in table scope, above the nearest special element (``list``: for li, dd, dt),
or only as the current node (``top``)."""
_BOUNDARIES = {
    "default": frozenset({"applet", "caption", "html", "table", "td", "th", "marquee", "object", "template",
                          "button"}),
    "table": frozenset({"html", "table", "template"}),
    "list": frozenset({
        "applet", "area", "article", "aside", "base", "basefont", "bgsound", "blockquote", "body", "br",
        "button", "caption", "center", "col", "colgroup", "dd", "details", "dir", "dl", "dt", "embed",
        "fieldset", "figcaption", "figure", "footer", "form", "frame", "frameset", "h1", "h2", "h3", "h4",
        "h5", "h6", "head", "header", "hgroup", "hr", "html", "iframe", "img", "input", "keygen", "li",
        "link", "listing", "main", "marquee", "menu", "meta", "nav", "noembed", "noframes", "noscript",
        "object", "ol", "param", "plaintext", "pre", "script", "search", "section", "select", "source",
        "style", "summary", "table", "tbody", "td", "template", "textarea", "tfoot", "th", "thead", "title",
        "tr", "track", "ul", "wbr", "xmp"}),
}
"""Elements a search for an open element stops at (HTML5 "has an element in scope", and for li,
dd, dt the special elements other than address, div and p)."""
_BOUND_KINDS: dict[str, tuple[str, ...]] = {
    name: tuple(kind for kind, names in _BOUNDARIES.items() if name in names)
    for name in frozenset().union(*_BOUNDARIES.values())
}
_BLOCKS_WITHOUT_RECONSTRUCTION = (_BOUNDARIES["list"] | {"address", "div", "p"}) - _FORMATTING - {
    "img", "input", "br", "embed", "keygen", "wbr", "area", "iframe", "noembed", "select", "textarea", "button"}
"""Start tags HTML5 inserts without first re-creating the formatting elements (special elements but
the phrasing ones, which do re-create them)."""
_TOKEN = re.compile(r"<(?:(!--)|(/?)([A-Za-z][^\t\n\f\r />]*+))")
_TAG_REST = re.compile(r"""(?:[^>"'=]++|=[ \t\n\r\f]*+(?:"[^"]*+"|'[^']*+')|[="'])*+>""")


@functools.lru_cache(maxsize=16)
def _raw_end(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}[\t\n\f\r />]", re.I)


class _Shape:
    """The tree an HTML5 parser would build, estimated in one pass over the tags, so that a
    document which would make it work quadratically is refused before it is parsed.

    Lexbor, like every HTML5 tree builder, checks "has an element in scope" by
    walking the stack of open elements (``<div>`` x 40,000 takes seconds), and
    re-creates every formatting element a block end tag closed before each new
    block (``<p><b 1>…<b n></p>`` then ``<p>x</p>`` x m makes n x m elements).
    The estimate errs high: implicit closes are applied only where HTML5 applies
    them, identical formatting elements are not merged.
    """

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.where: dict[str, list[int]] = {}
        self.bounds: dict[str, list[int]] = {kind: [] for kind in _BOUNDARIES}
        self.displaced: dict[str, int] = {}
        self.clones = 0
        self.foreign = 0

    def push(self, name: str) -> None:
        index = len(self.stack)
        if index >= MAX_HTML_DEPTH:
            raise MessageTooComplex(f"HTML elements nested deeper than {MAX_HTML_DEPTH}")
        self.stack.append(name)
        self.where.setdefault(name, []).append(index)
        for kind in _BOUND_KINDS.get(name, ()):
            self.bounds[kind].append(index)
        if name in ("svg", "math"):
            self.foreign += 1

    def find(self, names: frozenset[str], kind: str) -> int | None:
        """The nearest open element named in ``names`` that HTML5 would find, or None."""
        if kind == "top":
            return len(self.stack) - 1 if self.stack and self.stack[-1] in names else None
        bounds = self.bounds[kind]
        floor = bounds[-1] if bounds else -1
        best = max((found[-1] for name in names if (found := self.where.get(name))), default=-1)
        return best if best >= 0 and best >= floor else None

    def _undisplace(self, name: str) -> None:
        count = self.displaced.get(name, 0)
        if count > 1:
            self.displaced[name] = count - 1
        elif count:
            del self.displaced[name]

    def close(self, index: int) -> None:
        """Pop the element at ``index`` and everything above it (closed formatting elements above
        it are displaced: the parser re-creates them)."""
        closing = self.stack[index]
        while len(self.stack) > index:
            name = self.stack.pop()
            self.where[name].pop()
            for kind in _BOUND_KINDS.get(name, ()):
                self.bounds[kind].pop()
            if name in ("svg", "math"):
                self.foreign -= 1
            if name in _FORMATTING:
                self.displaced[name] = self.displaced.get(name, 0) + 1
        if closing in _FORMATTING:
            self._undisplace(closing)

    def reconstruct(self) -> None:
        if not self.displaced:
            return
        displaced, self.displaced = self.displaced, {}
        for name, count in displaced.items():
            self.clones += count
            if self.clones > MAX_HTML_CLONES:
                raise MessageTooComplex(f"HTML that re-creates more than {MAX_HTML_CLONES} formatting elements")
            for _ in range(count):
                self.push(name)

    def end_tag(self, name: str) -> None:
        index = self.find(frozenset((name,)), "table" if name in _TABLE_PARTS or name == "table" else "default")
        if index is not None:
            self.close(index)
        else:
            self._undisplace(name)

    def start_tag(self, name: str, self_closing: bool) -> None:
        rule = _CLOSES.get(name)
        if rule is not None:
            index = self.find(rule[1], rule[0])
            if index is not None:
                self.close(index)
        if name not in _BLOCKS_WITHOUT_RECONSTRUCTION:
            self.reconstruct()  # before phrasing elements; a block's content re-creates them inside it
        if name not in _VOID_TAGS and not (self_closing and self.foreign):
            self.push(name)


def _check_shape(source: str) -> None:
    """Raise MessageTooComplex for HTML an HTML5 parser would build quadratically (see _Shape)."""
    if source.count("<") < MAX_HTML_DEPTH:
        return
    shape = _Shape()
    pos = 0
    while (token := _TOKEN.search(source, pos)) is not None:
        if token.start() > pos and not source[pos:token.start()].isspace():
            shape.reconstruct()  # text re-creates the formatting elements, too
        if token.group(1):
            end = source.find("-->", token.end())
            if end < 0:
                return
            pos = end + 3
            continue
        rest = _TAG_REST.match(source, token.end())
        if rest is None:
            return  # the tag runs to the end of the document
        pos = rest.end()
        name = token.group(3).lower()
        if token.group(2):
            shape.end_tag(name)
            continue
        if name == "plaintext":
            return
        shape.start_tag(name, source[pos - 2] == "/")
        if name in _RAW_TAGS:
            end_tag = _raw_end(name).search(source, pos)
            if end_tag is None:
                return
            pos = end_tag.start()


def html_to_text(source: str) -> str:
    """The text of an HTML document, hidden text included (what ``agent_text`` holds)."""
    return _reduce_html(source).text


def _reduce_html(source: str, depth: int = 0) -> _HtmlText:
    _check_shape(source)
    reducer = _Reducer(depth)
    try:
        # Without DOM mutation events: with them, each <option> re-reads its <select> (quadratic).
        tree = LexborHTMLParser(source.encode("utf-8", "replace"), options=LexborDocumentOptions.WO_EVENTS)
        document = tree.root.parent if tree.root is not None else None
    except (SelectolaxError, ValueError, TypeError, UnicodeError, RuntimeError):
        document = None
    if document is None:
        text = _tidy(_HTML_SPACE.sub(" ", html_lib.unescape(_TAG.sub("", source))).strip())
        return _HtmlText(text=text, visible=text)
    reducer.walk(document)
    return reducer.result()


# -- format=flowed (RFC 3676) ----------------------------------------------------

def _unflow(text: str, delsp: bool) -> str:
    """Join the soft line breaks of a format=flowed body."""
    out: list[str] = []
    pending: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(" "):
            line = line[1:]  # space-stuffing
        if line.endswith(" ") and line != "-- ":
            pending.append(line[:-1] if delsp else line)
            continue
        pending.append(line)
        out.append("".join(pending))
        pending = []
    if pending:
        out.append("".join(pending))
    return "\n".join(out)


# -- Unicode tag characters --------------------------------------------------------

_TAG_CHARACTERS = re.compile("[\U000e0000-\U000e007f]+")


def strip_tag_characters(text: str) -> str:
    """``text`` without Unicode tag characters (U+E0000..U+E007F).

    They render as nothing, yet tokenizers read them as the ASCII characters
    they shadow: text the agent is handed never carries them.
    """
    return _TAG_CHARACTERS.sub("", text) if not text.isascii() else text


# -- the walk --------------------------------------------------------------------

class _Collector:
    def __init__(self, max_chars: int, max_parts: int, max_depth: int) -> None:
        self.parts: list[TextPart] = []
        self.max_chars = max(0, max_chars)
        self.remaining = self.max_chars
        self.truncated = False
        self.agent_plain: str | None = None
        self.agent_html: str | None = None
        self.html: str | None = None
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.entities = 0

    def enter(self, depth: int) -> None:
        """Count one MIME entity at ``depth``; refuse structure past the limits."""
        self.entities += 1
        if self.entities > self.max_parts:
            raise MessageTooComplex(f"more than {self.max_parts} MIME parts")
        if depth > self.max_depth:
            raise MessageTooComplex(f"MIME parts nested deeper than {self.max_depth} levels")

    def take(self, text: str) -> str:
        """Count ``text`` read from the message against the budget; return what fits."""
        if not text or text.isspace():
            return ""
        if len(text) > self.remaining:
            self.truncated = True
            text = text[: self.remaining]
        self.remaining -= len(text)
        return text

    def add(self, where: str, text: str) -> str:
        """Keep ``text`` read from the message (cut to what is left of the budget); return what was kept."""
        text = self.take(text)
        if text:
            self.parts.append(TextPart(where=where, text=text))
        return text

    def derive(self, where: str, text: str) -> None:
        """Keep a view derived from text already kept (not counted: it is bounded by its source)."""
        if text and not text.isspace():
            self.parts.append(TextPart(where=where, text=text, derived=True))


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


def _naming_param(part: Message, name: str, header: str) -> str:
    """A parameter that names the part, RFC 2231 and RFC 2047 decoded, whitespace squashed."""
    try:
        value = part.get_param(name, header=header)
        if isinstance(value, tuple):
            value = email.utils.collapse_rfc2231_value(value)
    except _EMAIL_FAILURES:
        return ""
    if not isinstance(value, str):
        return ""
    return _squash(decode_words(_unsurrogate(value)))


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


def _parser(part: Message) -> email.parser.BytesParser:
    policy = part.policy if isinstance(part.policy, email.policy.EmailPolicy) else email.policy.default
    return email.parser.BytesParser(policy=policy)


def _parse_bytes(part: Message, data: bytes) -> Message | None:
    try:
        return _parser(part).parsebytes(data)
    except _EMAIL_FAILURES:
        return None


_NOT_B64_BYTES = re.compile(rb"[^A-Za-z0-9+/]")


def _encoded_message(container: Message, child: Message) -> Message:
    """The attached message of a message/* part sent base64 or quoted-printable (RFC 2046
    forbids it; clients send it, and readers decode it): the email package parses the
    encoded text as a message, so it is decoded and parsed again here."""
    cte = (_safe_str(lambda: container.get("Content-Transfer-Encoding", "")) or "").strip().lower()
    if cte not in ("base64", "quoted-printable"):
        return child
    try:
        items = list(child.raw_items())
        payload = child.get_payload()
        if isinstance(payload, str):
            head = "".join(f"{k}:{v}\n" for k, v in items)
            encoded = ((head + "\n") if head else "") + payload
            data = encoded.encode("utf-8", "surrogateescape" if not _lone_surrogates(encoded) else "replace")
        else:
            data = child.as_bytes()
    except _EMAIL_FAILURES:
        return child
    if cte == "base64":
        clean = _NOT_B64_BYTES.sub(b"", data)
        if len(clean) % 4 == 1:
            clean = clean[:-1]
        try:
            decoded = base64.b64decode(clean + b"=" * (-len(clean) % 4))
        except (binascii.Error, ValueError):
            return child
    else:
        decoded = quopri.decodestring(data)
    return _parse_bytes(container, decoded) or child


def _add_html(where: str, reduced: _HtmlText, out: _Collector) -> None:
    """The derived views of one reduced HTML document (and of its srcdoc documents)."""
    out.derive(where, reduced.text)
    if reduced.visible != reduced.text:
        out.derive(f"{where} (visible)", reduced.visible)
    for kind, pieces in (("comment", reduced.comments), ("script", reduced.scripts),
                         ("style", reduced.styles), ("attributes", reduced.attributes),
                         ("css content", reduced.css_content)):
        out.derive(f"{where} html.{kind}", "\n".join(p.strip() for p in pieces if p.strip()))
    out.derive(f"{where} html.attribute names", " ".join(reduced.attribute_names))
    for i, frame in enumerate(reduced.srcdocs, 1):
        _add_html(f"{where} html.srcdoc[{i}]", frame, out)


def _markup(where: str, text: str, out: _Collector) -> str:
    """An HTML (or XML) part: the markup as sent, decoded, and the texts it holds.

    Returns the reduced text (what ``agent_text`` shows for an HTML body).
    """
    kept = out.take(text)
    reduced = _reduce_html(kept)
    _add_html(where, reduced, out)
    out.derive(f"{where} html.markup", kept)
    decoded = _unescape_markup(kept)
    if decoded != kept:
        out.derive(f"{where} html.markup decoded", decoded)
    return reduced.text


def _leaf(part: Message, index: int, prefix: str, top: bool, out: _Collector) -> Message | None:
    """Read one leaf part; return the message it holds when it is an RFC 5322 message file."""
    ctype = (_safe_str(part.get_content_type) or "text/plain").lower()
    disposition = _safe_str(part.get_content_disposition)
    filename = _naming_param(part, "filename", "content-disposition") or None
    name = _naming_param(part, "name", "content-type") or None
    if filename is None:
        fallback = _safe_str(part.get_filename)
        filename = _squash(decode_words(_unsurrogate(fallback))) if fallback else None
    if filename is not None:
        out.add(f"{prefix}attachment[{index}] filename", filename)
    if name is not None and name != filename:
        out.add(f"{prefix}attachment[{index}] name", name)
    description = _safe_str(lambda: str(part.get("Content-Description", "")))
    if description:
        out.add(f"{prefix}attachment[{index}] description", _raw_header_text(description))
    label = _label(filename or name or "") or None
    maintype, _, subtype = ctype.partition("/")
    # A container the parser could not split (no boundary, say) is still text to some readers.
    unparsed = maintype in ("multipart", "message")
    attached = disposition == "attachment"
    if attached:
        where = f"{prefix}attachment {label}" if label else f"{prefix}attachment[{index}] {ctype}"
    else:
        where = f"{prefix}body[{index}] {ctype}"
    if unparsed:
        where += " (unparsed)"
    data = _payload_bytes(part)
    charset = _safe_str(part.get_content_charset)
    other: str | None = None
    if maintype == "text" or unparsed:
        text, other = _decode(data, charset)
    else:
        sniffed = decodes_as_text(data, charset)
        if sniffed is None:
            return None  # binary
        text = sniffed
    text = _crlf(text)
    other = _crlf(other) if other is not None else None
    body_part = top and not attached and not unparsed
    if _is_markup(ctype) and not unparsed:
        reduced = _markup(where, text, out)
        if body_part and subtype == "html" and out.html is None:
            out.html = text
            out.agent_html = reduced
    else:
        if subtype == "plain" and _param(part, "format") == "flowed":
            text = _unflow(text, _param(part, "delsp") == "yes")
        kept = out.add(where, text)
        if maintype != "text" and not unparsed:
            decoded = unescape_code(kept)
            if decoded != kept:
                out.derive(f"{where} (escapes decoded)", decoded)
        if body_part and subtype == "plain" and out.agent_plain is None:
            out.agent_plain = kept
    if other is not None and other != text:
        out.add(f"{where} (as undeclared bytes)", other)
    if (attached or filename or name) and not unparsed and _looks_like_message(text, filename or name):
        return _parse_bytes(part, data)
    return None


def extract_readable(msg: EmailMessage, *, max_chars: int = MAX_CHARS, max_parts: int = MAX_PARTS,
                     max_depth: int = MAX_DEPTH) -> ReadableText:
    """Everything readable in ``msg``, in message order, at most ``max_chars`` characters read.

    Raises MessageTooComplex for more than ``max_parts`` MIME parts (attached
    messages' included) or nesting deeper than ``max_depth``; otherwise never
    raises: parts the email package cannot decode are read as raw text.
    """
    out = _Collector(max_chars, max_parts, max_depth)
    _headers(msg, "", out)
    leaf = 0
    nested = 0
    multiparts = 0
    # (part, prefix, top, depth): top is False inside attached messages.
    stack: list[tuple[Message, str, bool, int]] = [(msg, "", True, 0)]

    def attach(child: Message, depth: int, pushed: list[tuple[Message, str, bool, int]]) -> None:
        nonlocal nested
        nested += 1
        inner = f"message[{nested}] "
        _headers(child, inner, out)
        pushed.append((child, inner, False, depth))

    while stack:
        part, prefix, top, depth = stack.pop()
        out.enter(depth)
        children = _children(part)
        if children is None:
            leaf += 1
            held = _leaf(part, leaf, prefix, top, out)
            if held is not None:
                extra: list[tuple[Message, str, bool, int]] = []
                attach(held, depth + 1, extra)
                stack.extend(extra)
            continue
        ctype = (_safe_str(part.get_content_type) or "").lower()
        if ctype.startswith("multipart/"):
            multiparts += 1
            suffix = "" if multiparts == 1 else f"[{multiparts}]"
            for attr in ("preamble", "epilogue"):
                value = getattr(part, attr, None)
                if isinstance(value, str):
                    out.add(f"{prefix}{attr}{suffix}", _crlf(_unsurrogate(value)))
        pushed: list[tuple[Message, str, bool, int]] = []
        for child in children:
            if ctype.startswith("message/"):
                attach(_encoded_message(part, child), depth + 1, pushed)
            else:
                pushed.append((child, prefix, top, depth + 1))
        stack.extend(reversed(pushed))
    agent = out.agent_plain if out.agent_plain is not None else (out.agent_html or "")
    html = out.html
    if html is not None and len(html) > out.max_chars:
        html = html[: out.max_chars]
        out.truncated = True
    return ReadableText(
        parts=out.parts,
        agent_text=strip_tag_characters(agent),
        html=strip_tag_characters(html) if html is not None else None,
        truncated=out.truncated,
        read_chars=out.max_chars - out.remaining,
    )
