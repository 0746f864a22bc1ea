"""A stored message made safe to look at: its headers, its text, its HTML sanitized, its attachments listed.

The HTML is sanitized by nh3 (ammonia: an allow-list of tags and attributes, parsed as a browser
parses HTML5): no script, no event handler, no form, no frame, no ``<style>`` element; a style
attribute keeps only properties that can fetch nothing; a link keeps its text but loses its
target (nothing in the dashboard leaves for a sender's site); an image keeps only a ``data:``
source, so remote pictures (tracking pixels) are not loaded, and how many were blocked is said.
The result is shown in a frame served with ``MESSAGE_CSP`` (a sandbox with no script and no
network) inside ``<iframe sandbox>``: a sanitizer miss still runs nothing and fetches nothing.

Reading uses the JMAP index's MIME walk (``appliance.jmap.mime``), which never raises on hostile
bytes. Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["AttachmentView", "MessageView", "sanitize_html", "view_message"]

import copy
import re

import msgspec
import nh3
from selectolax.lexbor import LexborHTMLParser

from appliance.jmap.mime import decoded_part, leaves, part_text, summarize

MAX_TEXT_CHARS = 200_000
"""Characters of text or HTML shown at most (a bigger body is cut, and says so)."""

_STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "text-align",
    "text-decoration", "text-transform", "line-height", "letter-spacing", "vertical-align", "white-space",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding", "padding-top",
    "padding-right", "padding-bottom", "padding-left", "border", "border-top", "border-right", "border-bottom",
    "border-left", "border-color", "border-style", "border-width", "border-collapse", "border-spacing",
    "width", "height", "max-width", "min-width", "display", "direction",
})
"""CSS a message may keep: none of these takes a URL (no ``background``, ``background-image``, ``content``...)."""

_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}
_ATTRIBUTES = copy.deepcopy(nh3.ALLOWED_ATTRIBUTES)
_ATTRIBUTES["a"] = {"hreflang", "title"}  # no href: see the module's docstring
_ATTRIBUTES["*"] = {"style", "title", "dir", "lang", "align"}
for _quoting in ("q", "blockquote", "del", "ins"):
    _ATTRIBUTES[_quoting] = _ATTRIBUTES.get(_quoting, set()) - {"cite"}  # a sender's URL, unchecked by nh3
for _table in ("table", "td", "th", "tr"):
    _ATTRIBUTES[_table] = _ATTRIBUTES.get(_table, set()) | {"bgcolor", "width", "height", "valign", "border",
                                                             "cellpadding", "cellspacing"}


class AttachmentView(msgspec.Struct, frozen=True, kw_only=True):
    """An attachment, listed (never served): its name, type and decoded size."""

    name: str | None
    content_type: str
    size: int


class MessageView(msgspec.Struct, frozen=True, kw_only=True):
    """What the decision page shows of a message."""

    headers: dict[str, str]
    """From, To, Cc, Subject, Date, Message-ID as text (absent ones left out)."""
    text: str
    """The text parts, decoded; empty when the message has none."""
    html: str
    """The HTML parts, sanitized; empty when the message has none."""
    remote_images_blocked: int
    attachments: list[AttachmentView]
    truncated: bool
    """True when text or HTML was longer than ``MAX_TEXT_CHARS`` and was cut."""


_CSS_FUNCTION = re.compile(r"([a-z-]*)\s*\(", re.IGNORECASE)
_COLOUR_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla"})


def _inline_images_only(tag: str, attribute: str, value: str) -> str | None:
    """Images keep only inline data; a style keeps no CSS function but colours (no url(), expression(), var())."""
    if tag == "img" and attribute == "src" and not value.strip().lower().startswith("data:image/"):
        return None
    if attribute == "style" and ("\\" in value or any(
            name.lower() not in _COLOUR_FUNCTIONS for name in _CSS_FUNCTION.findall(value))):
        return None
    return value


def _remote_images(html: str) -> int:
    """Images whose source is not inline data (what a mail client would fetch), counted as a browser parses."""
    found = LexborHTMLParser(html).css("img[src], img[srcset], picture source")
    return sum(1 for node in found if not (node.attributes.get("src") or "").strip().lower().startswith("data:")
               or node.attributes.get("srcset"))


def sanitize_html(html: str) -> tuple[str, int]:
    """``html`` with nothing that runs or reaches out; and how many remote images were removed."""
    clean = nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, attribute_filter=_inline_images_only,
                      strip_comments=True, url_schemes=set(nh3.ALLOWED_URL_SCHEMES) | {"data"}, url_relative="deny",
                      filter_style_properties=set(_STYLE_PROPERTIES), link_rel="noopener noreferrer nofollow")
    return clean, _remote_images(html)


def _address_text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(f"{a.name} <{a.email}>" if getattr(a, "name", None) else str(getattr(a, "email", a))
                         for a in value)
    return "" if value is None else str(value)


def view_message(raw: bytes) -> MessageView:
    """Read ``raw`` for display: never raises on what a message holds."""
    summary = summarize(raw)
    names = {"from": "From", "to": "To", "cc": "Cc", "subject": "Subject", "sentAt": "Date",
             "messageId": "Message-ID"}
    headers = {}
    for prop, label in names.items():
        value = summary.headers.get(prop)
        if value:
            headers[label] = ", ".join(value) if prop == "messageId" else _address_text(value)
    texts, htmls = [], []
    for part_id in summary.text_body:
        part = summary.part(part_id)
        if part is not None and part.type == "text/plain":
            texts.append(part_text(raw, part)[0])
    for part_id in summary.html_body:
        part = summary.part(part_id)
        if part is not None and part.type == "text/html":
            htmls.append(part_text(raw, part)[0])
    text, html = "\n\n".join(texts), "\n".join(htmls)
    truncated = len(text) > MAX_TEXT_CHARS or len(html) > MAX_TEXT_CHARS
    clean, blocked = sanitize_html(html[:MAX_TEXT_CHARS]) if html else ("", 0)
    attachments = []
    by_id = {leaf.part_id: leaf for leaf in leaves(summary.structure)}
    for part_id in summary.attachments:
        leaf = by_id.get(part_id)
        if leaf is not None:
            attachments.append(AttachmentView(name=leaf.name, content_type=leaf.type,
                                              size=len(decoded_part(raw, leaf)[0])))
    return MessageView(headers=headers, text=text[:MAX_TEXT_CHARS], html=clean, remote_images_blocked=blocked,
                       attachments=attachments, truncated=truncated)
