"""Text → the canonical form content guards are matched against.

What a reader (human or model) perceives should be what a pattern sees:
invisible characters are removed, compatibility forms unified (NFKC: fullwidth,
mathematical alphanumerics, ligatures, odd spaces), diacritics dropped, letters
of other scripts that look like ASCII letters folded to them, and every run of
whitespace collapsed to one space so a phrase broken across lines still matches.

Folding to ASCII would break a pattern written in another script (a Russian
guard would no longer find Russian text once ``о`` became ``o``), so
:func:`normalized_forms` also returns the unfolded form; and a few glyphs read
as either ``I`` or ``l`` (Cyrillic ``Ӏ``, Greek ``Ι``…), so a text holding one
is also returned with the other reading. ``normalize`` returns the main form.
"""

from __future__ import annotations

__all__ = ["normalize", "normalized_forms"]

import re
import sys
import unicodedata


def _invisible_class() -> str:
    """A regex character class of every code point removed before matching.

    Format characters (Cf: zero-width space/joiners, word joiner, BOM, soft
    hyphen, bidi embeddings/overrides/isolates, marks LRM/RLM/ALM, Mongolian
    vowel separator, Unicode tag characters U+E0000..U+E007F…), control
    characters that are not whitespace, variation selectors, and letters that
    render as nothing (Hangul fillers, Khmer inherent vowels).
    """
    points: set[int] = set()
    for cp in (*range(0x20000), *range(0xE0000, 0xE1000)):
        cat = unicodedata.category(chr(cp))
        if cat == "Cf" or (cat == "Cc" and not chr(cp).isspace()):
            points.add(cp)
    points.update(range(0xE0000, 0xE0080))  # tag block, assigned or not
    points.update(range(0xFE00, 0xFE10))  # variation selectors 1-16
    points.update(range(0xE0100, 0xE01F0))  # variation selectors 17-256
    points.update((0x180B, 0x180C, 0x180D, 0x180F))  # Mongolian free variation selectors
    points.update((0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0))
    ranges: list[str] = []
    ordered = sorted(points)
    start = prev = ordered[0]
    for cp in [*ordered[1:], sys.maxunicode + 2]:
        if cp == prev + 1:
            prev = cp
            continue
        first, last = re.escape(chr(start)), re.escape(chr(prev))
        ranges.append(first if start == prev else f"{first}-{last}")
        start = prev = cp
    return "[" + "".join(ranges) + "]+"


_INVISIBLE = re.compile(_invisible_class())
_WHITESPACE = re.compile(r"\s+")

# Letters of other scripts whose glyph is an ASCII letter, folded to that letter.
# Source: the prototypes of Unicode's confusables.txt (UTS #39, "Unicode Security
# Mechanisms"), restricted to letters of the Latin, Greek, Cyrillic, Armenian,
# Cherokee and Coptic scripts that NFKC leaves alone and whose prototype is one
# ASCII letter (fullwidth and mathematical letters are already ASCII after NFKC).
# Each token is a source character followed by its ASCII letter.
_UTS39 = """
ıi Ƅb ƍg ƦR ƽs ɑa ɡg ɣy ɩi ɪi ɯw ʋu ʏy ᴄc ᴏo ᴑo ᴜu ᴠv ᴡw ᴢz ᶃg ᶌy ẝf ỿy ꜱs ꞘF ꞙf
ꞟu ꞲJ ꞳX ꞴB ꬲe ꬵf ꬽo ꭇr ꭈr ꭎu ꭒu ꭚy
ͿJ ΑA ΒB ΕE ΖZ ΗH ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX αa γy ιi νv οo ρp σo υu ϜF ϳj ϺM ᴦr
ЅS ЈJ АA ВB ЕE КK МM НH ОO РP СC ТT УY ХX Ьb аa гr еe оo рp сc уy хx ѕs іi јj ѡw
ѴV ѵv ҮY үy һh ҽe ӏi ԁd ԌG ԛq ԜW ԝw ꙇi
ՍU ՏS ՕO աw գq զq հh ոn ռn սu ցg քf օo
ᎠD ᎡR ᎢT Ꭵi ᎩY ᎪA ᎫJ ᎬE ᎳW ᎷM ᎻH ᎽY ᏀG Ꮒh ᏃZ Ꮟb ᏒR ᏔW ᏕS ᏙV ᏚS ᏞL ᏟC ᏢP ᏦK Ꮷd
ᏳG ᏴB ꭵi ꮁr ꮃw ꮓz ꮩv ꮪs ꮯc
ⲅr ⲎH ⲔK ⲘM ⲚN ⲞO ⲟo ⲢP ⲣp ⲤC ⲥc ⲦT ⲨY ⲬX ⳐL
"""
# Beyond UTS #39: Latin small capitals (the "fancy text" generators' ɪɢɴᴏʀᴇ), and
# Cyrillic/Greek lowercase letters drawn as Latin small capitals.
_SMALL_CAPS = """
ᴀa ʙb ᴅd ᴇe ꜰf ɢg ʜh ᴊj ᴋk ʟl ᴍm ɴn ᴘp ǫq ʀr ᴛt
вb кk мm нh тt κk
"""
# Glyphs read as capital I or lowercase l alike (UTS #39 folds them to "l").
_AMBIGUOUS_I = "ΙІӀǀƖⲒ"


def _table(pairs: str, ambiguous: str) -> dict[int, str]:
    table = {ord(token[0]): token[1] for token in pairs.split()}
    table.update({ord(ch): ambiguous for ch in _AMBIGUOUS_I})
    return table


_FOLD_I = _table(_UTS39 + _SMALL_CAPS, "I")
_FOLD_L = _table(_UTS39 + _SMALL_CAPS, "l")
_HAS_AMBIGUOUS = re.compile(f"[{_AMBIGUOUS_I}]")


def _base(text: str) -> str:
    """Invisible characters removed, NFKC applied."""
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    return _INVISIBLE.sub("", text)


def _strip_marks(text: str) -> str:
    """Drop nonspacing and enclosing marks (accents, "zalgo" stacks) and U+FFFD.

    U+FFFD stands where undecodable bytes were: "ig\\ufffdnore" still reads as
    "ignore" to a model.
    """
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(
        ch for ch in decomposed if ch != "\ufffd" and unicodedata.category(ch) not in ("Mn", "Me")
    )
    return unicodedata.normalize("NFC", kept)


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def normalize(text: str) -> str:
    """The main canonical form of ``text`` for content guards.

    Invisible and format characters removed, NFKC, combining marks dropped,
    look-alike letters folded to ASCII, whitespace runs collapsed to one space.
    Case is kept: patterns carry their own flags.
    """
    if text.isascii():
        return _collapse(_INVISIBLE.sub("", text))
    return _collapse(_strip_marks(_base(text)).translate(_FOLD_I))


def normalized_forms(text: str) -> list[tuple[str, str]]:
    """Every form of ``text`` a guard is matched against, as ``(label, text)``.

    The first is :func:`normalize`'s (label ``""``); then, when they differ, the
    form without folding and mark stripping (``"unfolded"``, for patterns in
    other scripts) and the form reading ambiguous I/l glyphs as ``l``.
    """
    main = normalize(text)
    forms = [("", main)]
    if text.isascii():
        return forms
    base = _base(text)
    unfolded = _collapse(base)
    if unfolded != main:
        forms.append(("unfolded", unfolded))
    if _HAS_AMBIGUOUS.search(base):
        as_l = _collapse(_strip_marks(base).translate(_FOLD_L))
        if as_l != main:
            forms.append(("I/l read as l", as_l))
    return forms
