"""Characters that read as Latin letters, from maintained tables, as ``str.translate`` tables.

Built once at import, from:

- Unicode's confusables (UTS #39, "Unicode Security Mechanisms", section 4), as
  shipped by the ``confusable-homoglyphs`` package (its ``confusables.json`` is
  generated from ``confusables.txt``): every character whose prototype is ASCII
  maps to that prototype with combining marks dropped, so the skeleton of
  ``ø`` ("o" + long solidus) is ``o``, of Cyrillic ``о`` is ``o``, of Greek
  ``ι`` is ``i``.
- ``anyascii`` (transliteration tables) for the Latin letters UTS #39 leaves
  out: small capitals (``ɪɢɴᴏʀᴇ``), letters with a stroke or bar that no font
  confuses but every reader reads (``đ``, ``ħ``, ``ŧ``), negative circled and
  squared letters (``🅘``, ``🅸``) and regional indicators (``🇮``). Only
  characters whose Unicode name says LATIN or REGIONAL INDICATOR are taken
  from it: for other scripts a transliteration is a reading, not a look-alike
  (``normalize`` offers it as a form of its own).

Characters that Unicode normalization (NFKD) already decomposes are left to it:
the table is applied after NFKD. ASCII characters are never remapped (``0``
and ``O``, ``1`` and ``l`` stay apart).
"""

from __future__ import annotations

__all__ = ["AMBIGUOUS_I", "SKELETON", "skeleton_source"]

import importlib.resources
import json
import unicodedata

from anyascii import anyascii

_PACKAGE = "confusable_homoglyphs"
_MARKS = frozenset({"Mn", "Me"})


def _bare(text: str) -> str:
    """``text`` without combining marks and format characters (the package wraps RTL letters in LRM)."""
    return "".join(ch for ch in unicodedata.normalize("NFD", text)
                   if unicodedata.category(ch) not in _MARKS and unicodedata.category(ch) != "Cf")


def _stable(ch: str) -> bool:
    return unicodedata.normalize("NFKD", ch) == ch


def _uts39() -> dict[str, str]:
    """Non-ASCII character → its ASCII prototype, from the package's confusables.json."""
    data = json.loads(importlib.resources.files(_PACKAGE).joinpath("confusables.json").read_text("utf-8"))
    table: dict[str, str] = {}
    for key, homoglyphs in data.items():
        ch = key.replace("\u200e", "")
        if len(ch) != 1 or ch.isascii() or not _stable(ch):
            continue
        # A source character lists its prototype; the JSON also lists the reverse direction,
        # which for a non-ASCII character never names an ASCII one.
        for entry in homoglyphs:
            prototype = _bare(entry["c"])
            if prototype and prototype.isascii():
                table[ch] = prototype
                break
    return table


# Blocks holding Latin letters outside what NFKD decomposes (Latin-1 to Latin Extended-B, IPA,
# phonetic extensions, Latin Extended Additional/C/D/E/G, enclosed alphanumeric supplement).
_LATIN_BLOCKS = (
    (0x0080, 0x0250), (0x0250, 0x02B0), (0x1D00, 0x1DC0), (0x1E00, 0x1F00), (0x2100, 0x2190),
    (0x2C60, 0x2C80), (0xA720, 0xA800), (0xAB30, 0xAB70), (0x1DF00, 0x1E000), (0x1F100, 0x1F200),
)


def _latin_letters() -> dict[str, str]:
    """Latin letters (and regional indicators) → their ASCII letters, from anyascii."""
    table: dict[str, str] = {}
    for start, stop in _LATIN_BLOCKS:
        for cp in range(start, stop):
            ch = chr(cp)
            name = unicodedata.name(ch, "")
            if not ("LATIN" in name or name.startswith("REGIONAL INDICATOR")) or not _stable(ch):
                continue
            ascii_ = anyascii(ch)
            if ascii_ and ascii_.isascii() and ascii_.isalpha() and len(ascii_) <= 3:
                table[ch] = ascii_
    return table


def _build() -> tuple[dict[str, str], dict[str, str]]:
    uts39 = _uts39()
    table = {**_latin_letters(), **uts39}
    return table, uts39


SKELETON, _FROM_UTS39 = _build()
"""Non-ASCII character (NFKD-stable) → ASCII skeleton."""

AMBIGUOUS_I = frozenset(
    ch for ch, proto in _FROM_UTS39.items()
    if proto == "l" and "SMALL LETTER L" not in unicodedata.name(ch, "")
)
"""Glyphs drawn as a vertical stroke (Greek ``Ι``, Cyrillic ``І``/``Ӏ``, Hebrew vav…): UTS #39 gives
them the skeleton ``l``; a reader takes most of them for a capital ``I``. Both readings are scanned."""


def skeleton_source(ch: str) -> str:
    """Where the skeleton of ``ch`` comes from: ``"uts39"``, ``"anyascii"`` or ``""`` (none)."""
    if ch in _FROM_UTS39:
        return "uts39"
    return "anyascii" if ch in SKELETON else ""
