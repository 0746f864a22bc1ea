"""Text → the canonical forms content guards are matched against.

What a reader (human or model) perceives should be what a pattern sees.
The main form has invisible characters removed, compatibility forms unified
(NFKD: fullwidth, mathematical alphanumerics, ligatures, circled letters, odd
spaces), combining marks dropped, look-alike letters folded to their Latin
skeleton (``appliance.guards.confusables``: Unicode's UTS #39 table plus Latin
letters from anyascii), and every run of whitespace collapsed to one space so
a phrase broken across lines still matches. Case is kept: patterns carry their
own flags.

A single reading is not enough, so :func:`normalized_forms` adds, when they
differ from the main form:

- ``unfolded``: NFKC only, for patterns in other scripts (a Russian guard must
  still find Russian text once ``о`` would have become ``o``) and for accented
  patterns; only when the main form changed a letter, mark or digit;
- ``I/l read as l``: glyphs drawn as a vertical stroke (Cyrillic ``Ӏ``, Greek
  ``Ι``…) read as ``l`` instead of ``I``;
- ``invisible as space``: zero-width characters, Hangul fillers, the braille
  blank and other invisible characters read as word breaks (``ignore`` U+200B
  ``previous`` shows as two words to a model, one word in the main form);
- ``tags read as ASCII``: Unicode tag characters (U+E0020..U+E007E), which
  render as nothing but which tokenizers read as the ASCII letters they shadow;
- ``visual order``: runs under a right-to-left override (U+202E) reversed, as
  they are displayed;
- ``transliterated``: anyascii's reading of letters of other scripts, when
  it differs from their skeleton.

Every form is one linear pass per step: ``str.translate`` with tables built at
import, Unicode normalization, ``str.split``. Which forms a text needs is
decided from its set of distinct characters, so plain ASCII costs one pass and
mostly-ASCII mail is mapped with a character class of the few characters that
need it instead of a dictionary lookup per character.
"""

from __future__ import annotations

__all__ = ["normalize", "normalized_forms"]

import functools
import re
import unicodedata
from collections.abc import Callable

from anyascii import anyascii

from appliance.guards.confusables import AMBIGUOUS_I, SKELETON

Table = dict[int, "str | None"]

TAG_FIRST, TAG_LAST = 0xE0000, 0xE007F
"""The Unicode tag block (U+E0000..U+E007F), assigned or not."""

# Invisible letters and blanks that are not format characters (Cf).
_BLANKS = (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, 0x2800, 0x1D159, 0x1D173, 0x1D174,
           0x1D175, 0x1D176, 0x1D177, 0x1D178, 0x1D179, 0x1D17A)


def _classes() -> tuple[frozenset[int], frozenset[int]]:
    """Code points removed before matching, and combining marks.

    Removed: format characters (Cf: zero-width space/joiners, word joiner, BOM,
    soft hyphen, bidi embeddings/overrides/isolates, marks LRM/RLM/ALM,
    Mongolian vowel separator, the tag block…), control characters that are not
    whitespace, variation selectors, and letters that render as nothing (Hangul
    fillers, Khmer inherent vowels, the braille blank U+2800).
    """
    invisible: set[int] = set()
    marks: set[int] = set()
    for cp in (*range(0x30000), *range(0xE0000, 0xE1000)):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if cat == "Cf" or (cat == "Cc" and not ch.isspace()):
            invisible.add(cp)
        elif cat in ("Mn", "Me"):
            marks.add(cp)
    invisible.update(range(TAG_FIRST, TAG_LAST + 1))
    invisible.update(range(0xFE00, 0xFE10))  # variation selectors 1-16
    invisible.update(range(0xE0100, 0xE01F0))  # variation selectors 17-256
    invisible.update((0x180B, 0x180C, 0x180D, 0x180F))  # Mongolian free variation selectors
    invisible.update(_BLANKS)
    return frozenset(invisible), frozenset(marks - invisible)


_INVISIBLE, _MARKS = _classes()
_TAGS = frozenset(range(TAG_FIRST, TAG_LAST + 1))

_DELETE: Table = dict.fromkeys(_INVISIBLE)
"""Invisible characters removed."""
_AS_SPACE: Table = {**{cp: " " for cp in _INVISIBLE}, **dict.fromkeys(_TAGS)}
"""Invisible characters read as word breaks (tag characters still removed)."""
_TAGS_AS_ASCII: Table = {**_DELETE, **{cp: chr(cp - TAG_FIRST) for cp in range(TAG_FIRST + 0x20, TAG_LAST)}}
"""Tag characters read as the ASCII characters they shadow; other invisible characters removed."""
_ASCII_DELETE: Table = {cp: None for cp in _INVISIBLE if cp < 0x80}
_ASCII_AS_SPACE: Table = {cp: " " for cp in _INVISIBLE if cp < 0x80}


def _fold_table(ambiguous: str) -> Table:
    """Applied after NFKD: marks, U+FFFD and invisible characters removed, skeletons folded."""
    table: Table = dict.fromkeys(_MARKS | _INVISIBLE | {0xFFFD})
    table.update({ord(ch): proto for ch, proto in SKELETON.items()})
    table.update({ord(ch): ambiguous for ch in AMBIGUOUS_I})
    return table


_FOLD_I = _fold_table("I")
_FOLD_L = _fold_table("l")

_INVISIBLE_CHARS = frozenset(map(chr, _INVISIBLE))
_SEPARATOR_CHARS = frozenset(map(chr, _INVISIBLE - _TAGS))
_TAG_CHARS = frozenset(map(chr, _TAGS))
_AMBIGUOUS_CHARS = frozenset(AMBIGUOUS_I)
_RLO = "\u202e"
_RLO_RUN = re.compile("\u202e([^\u202a-\u202e\u2066-\u2069\n\r\x1c-\x1e\x85\u2028\u2029]*)")
"""A right-to-left override and the run it governs: up to the next bidi control or paragraph end."""

_SPARSE_MAX_CHARS = 48
"""At most this many distinct characters to map: count them, and map them by a character class when rare."""
_SPARSE_RATIO = 16
"""A character class is used when fewer than one character in this many needs mapping."""


def _collapse(text: str) -> str:
    return " ".join(text.split())


@functools.lru_cache(maxsize=512)
def _char_class(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(ch) for ch in sorted(chars)) + "]")


def _map(text: str, chars: frozenset[str], table: Table) -> tuple[str, frozenset[str]]:
    """``text.translate(table)`` and the distinct characters of the result.

    When few characters need mapping (mostly-ASCII mail with a few accents or
    dashes), a character class of them finds the few places to change, which
    is several times faster than translating every character through a dict.
    """
    needed = [ch for ch in chars if ord(ch) in table]
    if not needed:
        return text, chars
    produced: set[str] = set()
    for ch in needed:
        produced.update(table[ord(ch)] or "")
    result_chars = chars.difference(needed).union(produced)
    if len(needed) <= _SPARSE_MAX_CHARS:
        hits = sum(map(text.count, needed))
        if hits * _SPARSE_RATIO < len(text):
            replace: Callable[[re.Match[str]], str] = lambda m: table[ord(m.group())] or ""  # noqa: E731
            return _char_class(frozenset(needed)).sub(replace, text), result_chars
    return text.translate(table), result_chars


@functools.lru_cache(maxsize=65_536)
def _decomposition(ch: str) -> str:
    return unicodedata.normalize("NFKD", ch)


def _nfkd(text: str, chars: frozenset[str]) -> tuple[str, frozenset[str]]:
    changed = [ch for ch in chars if not ch.isascii() and _decomposition(ch) != ch]
    if not changed:
        return text, chars
    produced = {piece for ch in changed for piece in _decomposition(ch)}
    return unicodedata.normalize("NFKD", text), chars.difference(changed).union(produced)


def _fold(text: str, chars: frozenset[str], table: Table) -> str:
    """NFKD, then ``table`` (marks and invisible characters removed, skeletons), then NFC, collapsed."""
    text, chars = _nfkd(text, chars)
    text, chars = _map(text, chars, table)
    if not all(ch.isascii() for ch in chars):
        text = unicodedata.normalize("NFC", text)
    return _collapse(text)


@functools.lru_cache(maxsize=65_536)
def _transliteration(ch: str) -> str:
    return anyascii(ch)


@functools.lru_cache(maxsize=65_536)
def _folded_char(ch: str) -> str:
    return _fold(ch, frozenset(ch), _FOLD_I)


@functools.lru_cache(maxsize=65_536)
def _reads_differently(ch: str) -> bool:
    """A letter that anyascii reads otherwise than the skeleton fold does (Cyrillic ``п``: "p", not "n")."""
    if ch.isascii() or unicodedata.category(ch)[0] != "L":
        return False
    return _transliteration(ch).strip() != _folded_char(ch)


@functools.lru_cache(maxsize=65_536)
def _folds_a_letter(ch: str) -> bool:
    """A letter, mark or digit the main form changes (only such changes can hide a pattern's own
    letters: punctuation folded to ASCII, "—" or "“", does not call for an unfolded form)."""
    return not ch.isascii() and unicodedata.category(ch)[0] in "LMN" and _folded_char(ch) != ch


def _visual(text: str) -> str:
    return _RLO_RUN.sub(lambda m: m.group(1)[::-1], text)


def normalize(text: str) -> str:
    """The main canonical form of ``text`` for content guards.

    Invisible and format characters removed, NFKD, combining marks dropped,
    look-alike letters folded to their Latin skeleton, whitespace runs
    collapsed to one space. Case is kept: patterns carry their own flags.
    """
    if text.isascii():
        return _collapse(text.translate(_ASCII_DELETE))
    return _fold(text, frozenset(text), _FOLD_I)


def normalized_forms(text: str) -> list[tuple[str, str]]:
    """Every form of ``text`` a guard is matched against, as ``(label, text)``.

    The first is :func:`normalize`'s (label ``""``); the others (see the module
    docstring) only when the text has characters that make them differ.
    """
    forms: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(label: str, form: str) -> None:
        if form not in seen:
            seen.add(form)
            forms.append((label, form))

    if text.isascii():
        stripped = text.translate(_ASCII_DELETE)
        add("", _collapse(stripped))
        if len(stripped) != len(text):
            add("invisible as space", _collapse(text.translate(_ASCII_AS_SPACE)))
        return forms

    chars = frozenset(text)
    add("", _fold(text, chars, _FOLD_I))
    visible, visible_chars = _map(text, chars, _DELETE)
    if any(_folds_a_letter(ch) for ch in visible_chars):
        add("unfolded", _collapse(unicodedata.normalize("NFKC", visible)))
    if not chars.isdisjoint(_AMBIGUOUS_CHARS):
        add("I/l read as l", _fold(text, chars, _FOLD_L))
    if not chars.isdisjoint(_SEPARATOR_CHARS):
        spaced, spaced_chars = _map(text, chars, _AS_SPACE)
        add("invisible as space", _fold(spaced, spaced_chars, _FOLD_I))
    if not chars.isdisjoint(_TAG_CHARS):
        decoded, decoded_chars = _map(text, chars, _TAGS_AS_ASCII)
        add("tags read as ASCII", _fold(decoded, decoded_chars, _FOLD_I))
    if _RLO in chars:
        add("visual order", _fold(_visual(text), chars, _FOLD_I))
    if any(_reads_differently(ch) for ch in visible_chars):
        table: Table = {ord(ch): _transliteration(ch) for ch in visible_chars if not ch.isascii()}
        add("transliterated", _collapse(_map(visible, visible_chars, table)[0]))
    return forms

