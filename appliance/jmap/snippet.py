"""SearchSnippet/get (RFC 8621 5): where a search's words occur in each email, marked up.

The words come from the filter's ``text``, ``subject`` and ``body``
conditions (not from inside ``NOT``). ``subject`` is the subject with the
words in ``<mark>``, null when none occurs in it; ``preview`` a stretch of the
body around the first occurrence (at most 255 octets), null when none occurs.
Everything else is HTML-escaped.
"""

from __future__ import annotations

__all__ = ["highlight", "search_words"]

import asyncio
import html
import re
from typing import Any

import duckdb

from appliance.jmap import local, mime
from appliance.jmap.core import args_of, get_ids, read
from appliance.jmap.proto import MAIL, MethodError, SearchSnippetGetArgs
from appliance.jmap.router import Call, method
from appliance.mail import html_to_text
from appliance.store import jmap as jmap_store

PREVIEW_OCTETS = 255


def search_words(node: Any, subject: bool = True) -> tuple[list[str], list[str]]:
    """(words for the subject, words for the body) of a filter."""
    subject_words: list[str] = []
    body_words: list[str] = []
    if isinstance(node, dict):
        if "operator" in node:
            if node.get("operator") != "NOT":
                for condition in node.get("conditions") or []:
                    s, b = search_words(condition)
                    subject_words += s
                    body_words += b
            return subject_words, body_words
        for name, value in node.items():
            if not isinstance(value, str):
                continue
            words = value.split()
            if name in ("text", "subject"):
                subject_words += words if name == "text" else [" ".join(words)]
            if name in ("text", "body"):
                body_words += words
    return [w for w in subject_words if w], [w for w in body_words if w]


def _pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)), re.IGNORECASE)


def highlight(text: str, pattern: re.Pattern[str]) -> str | None:
    """``text`` HTML-escaped with each match in ``<mark>``; None when nothing matches."""
    out: list[str] = []
    last, found = 0, False
    for match in pattern.finditer(text):
        found = True
        out.append(html.escape(text[last:match.start()]))
        out.append(f"<mark>{html.escape(match.group(0))}</mark>")
        last = match.end()
    if not found:
        return None
    out.append(html.escape(text[last:]))
    return "".join(out)


def _preview(text: str, pattern: re.Pattern[str]) -> str | None:
    text = " ".join(text.split())
    match = pattern.search(text)
    if match is None:
        return None
    start = max(0, match.start() - 40)
    window = text[start:start + 200]
    while True:
        marked = highlight(window, pattern)
        if marked is None:
            return None
        if len(marked.encode()) <= PREVIEW_OCTETS or len(window) <= len(match.group(0)):
            return marked if len(marked.encode()) <= PREVIEW_OCTETS else None
        window = window[:int(len(window) * 0.8)]


def _snippets(rows: dict[str, jmap_store.EmailRow], raws: dict[str, bytes], order: list[str],
              subject_words: list[str], body_words: list[str]) -> list[dict[str, Any]]:
    subject_pattern, body_pattern = _pattern(subject_words), _pattern(body_words)
    out = []
    for email_id in order:
        row = rows.get(email_id)
        if row is None:
            continue
        summary = local.summary_of(row)
        subject = summary.headers.get("subject") or ""
        preview = None
        raw = raws.get(email_id)
        if body_pattern is not None and raw is not None:
            texts = []
            for part_id in summary.text_body:
                part = summary.part(part_id)
                if part is not None and part.type.startswith("text/"):
                    text, _ = mime.part_text(raw, part)
                    texts.append(html_to_text(text) if part.type == "text/html" else text)
            preview = _preview("\n".join(texts), body_pattern)
        out.append({"emailId": email_id,
                    "subject": highlight(subject, subject_pattern) if subject_pattern else None,
                    "preview": preview})
    return out


@method("SearchSnippet/get", MAIL)
async def search_snippet_get(call: Call, arguments: dict[str, Any]) -> dict[str, Any]:
    args = args_of(SearchSnippetGetArgs, arguments)
    agent = await call.agent(args.account_id)
    ids = get_ids(call, args.email_ids)
    if ids is None:
        raise MethodError("invalidArguments", "emailIds is required")
    subject_words, body_words = search_words(args.filter or {})

    def work(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, jmap_store.EmailRow], dict[str, bytes]]:
        rows = jmap_store.email_rows(con, agent, ids)
        return rows, local.raws(con, agent, list(rows.values())) if body_words and rows else {}

    rows, raws = await read(call, work)
    found = await asyncio.to_thread(_snippets, rows, raws, ids, subject_words, body_words)
    return {"accountId": args.account_id, "list": found, "notFound": [i for i in ids if i not in rows] or None}
