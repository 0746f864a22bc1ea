"""Charts as SVG made on the server (pygal), put inline in the page and readable without script.

pygal's SVG carries a ``<script>`` (its tooltip configuration) and a ``<style>``. The dashboard runs
no script, so the script element is removed, with the tooltip layer that only script would fill;
values are printed on the bars instead, and each bar keeps a ``<title>`` a browser shows on hover.
The ``<style>`` stays: the page's Content-Security-Policy allows exactly that stylesheet by its
SHA-256 hash (``Chart.style_hash``), and no other inline style.
"""

from __future__ import annotations

__all__ = ["COLOURS", "PALETTE", "BarSeries", "Chart", "bar_chart"]

import base64
import hashlib
import sys
import xml.etree.ElementTree as ET  # builds and writes our own tree; parsing goes through defusedxml

import msgspec
import pygal
from defusedxml.ElementTree import fromstring
from markupsafe import Markup
from pygal.style import Style

# pygal appends a legacy import hook (for its map plugins, which we do not use) that has no find_spec:
# every later import that reaches it warns (ImportWarning), an error under the tests' warning policy.
sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "PluginImportFixer"]

_SVG = "http://www.w3.org/2000/svg"
_XLINK = "http://www.w3.org/1999/xlink"
ET.register_namespace("", _SVG)
ET.register_namespace("xlink", _XLINK)

PALETTE = ("#1565c0", "#6a1b9a", "#00838f", "#ad1457", "#546e7a", "#f9a825", "#2e7d32", "#c62828")
"""Colours of series that name none, in turn."""
COLOURS = {
    "accept": "#2e7d32", "delivered": "#2e7d32", "sent": "#2e7d32",
    "quarantine": "#f9a825", "held": "#f9a825", "pending": "#f9a825", "awaiting": "#fbc02d", "queued": "#f9a825",
    "tempfail": "#ef6c00", "drop": "#78909c", "stream": "#1565c0",
    "bounce": "#c62828", "dead": "#c62828", "failed": "#b71c1c", "bounced": "#c62828",
}
"""A series named for an action or a status has the same colour in every chart (good green, bad red)."""


def _style(colours: tuple[str, ...]) -> Style:
    return Style(background="transparent", plot_background="transparent", foreground="#222",
                 foreground_strong="#111", foreground_subtle="#999", opacity="0.9", opacity_hover="1",
                 colors=colours, font_family="system-ui, sans-serif", label_font_size=11,
                 major_label_font_size=11, legend_font_size=13, value_font_size=12, title_font_size=15)


class BarSeries(msgspec.Struct, frozen=True, kw_only=True):
    """One series of bars: its name and one value per x label (None: no bar)."""

    name: str
    values: list[int | None]


class Chart(msgspec.Struct, frozen=True, kw_only=True):
    """An SVG to put inline, and the CSP source that lets its stylesheet apply."""

    svg: str
    style_hash: str
    """``'sha256-...'`` of the SVG's ``<style>`` text, for the page's ``style-src``."""

    def __html__(self) -> str:
        return Markup(self.svg)  # noqa: S704 - pygal's SVG, every text in it escaped by ElementTree


def bar_chart(*, chart_id: str, title: str, x_labels: list[str], series: list[BarSeries], stacked: bool = False,
              horizontal: bool = False, width: int = 900, height: int = 320) -> Chart:
    """A bar chart (stacked or side by side, vertical or horizontal) as inline SVG (``data-chart=chart_id``)."""
    kind = {(False, False): pygal.Bar, (True, False): pygal.StackedBar,
            (False, True): pygal.HorizontalBar, (True, True): pygal.HorizontalStackedBar}[(stacked, horizontal)]
    spare = iter(PALETTE)
    colours = tuple(COLOURS.get(one.name) or next(spare, "#455a64") for one in series)
    longest = max((len(label) for label in x_labels), default=0)
    rotate = 0 if horizontal or longest * 7 * len(x_labels) < width * 0.85 else 30
    chart = kind(js=[], style=_style(colours or PALETTE), disable_xml_declaration=True, print_values=not stacked,
                 height=height, width=width, legend_at_bottom=True, legend_at_bottom_columns=min(6, len(series) or 1),
                 x_label_rotation=rotate, show_y_guides=True, margin=12, truncate_label=-1, print_zeroes=False)
    chart.title = title
    chart.x_labels = x_labels
    for one in series:
        chart.add(one.name, one.values)
    return _without_script(chart.render(is_unicode=True), chart_id=chart_id, title=title)


def _without_script(svg: str, *, chart_id: str, title: str) -> Chart:
    root = fromstring(svg)
    root.set("data-chart", chart_id)  # pygal's own id stays: its stylesheet's selectors name it
    root.set("role", "img")
    root.set("aria-label", title)
    style_text = ""
    for parent in list(root.iter()):
        for child in list(parent):
            tag = child.tag.rpartition("}")[2]
            if tag == "script" or "tooltip" in (child.get("class") or "").split():
                parent.remove(child)
            elif tag == "style":
                style_text = child.text or ""
            if "style" in child.attrib:
                del child.attrib["style"]  # inline style attributes would need 'unsafe-inline'
    for bar in root.iter(f"{{{_SVG}}}g"):
        descs = {(d.get("class") or ""): d.text or "" for d in bar.findall(f"{{{_SVG}}}desc")}
        if "value" in descs:
            label = ET.SubElement(bar, f"{{{_SVG}}}title")
            label.text = f"{descs.get('x_label', '')}: {descs['value']}".strip(": ")
    digest = base64.b64encode(hashlib.sha256(style_text.encode()).digest()).decode()
    return Chart(svg=ET.tostring(root, encoding="unicode"), style_hash=f"'sha256-{digest}'")
