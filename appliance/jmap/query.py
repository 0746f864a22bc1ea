"""Email/query and Email/queryChanges over the index (RFC 8621 4.4, 4.5): filters and sorts as SQL.

A filter (RFC 8620 5.5: operators AND, OR, NOT over conditions) becomes one
WHERE fragment over ``jmap_emails e``, always scoped to the account; a sort
becomes an ORDER BY with the email id as the last tie-breaker, so every order
is total and stable. ``collapseThreads`` keeps the first email of each thread
in that order. Text conditions match lowercased substrings (every word of
``text`` and ``body`` must occur; ``from``, ``subject``... match the whole
string).

The statements themselves (``FROM jmap_emails``, the thread subqueries) are
``appliance.store.jmap``'s: this module compiles the fragments and windows.
"""

from __future__ import annotations

__all__ = ["EmailQuery", "compile_query", "query_changes", "run_query"]

import re
from typing import Any

import duckdb
import msgspec

from appliance.jmap.changes import unique
from appliance.jmap.mime import parse_utc
from appliance.jmap.proto import Comparator, MethodError
from appliance.store.changes import log_threads_since
from appliance.store.jmap import (
    EmailQuery,
    count_matching,
    emails_in_threads,
    matching_page,
    position_of,
    positions_in,
    thread_member_subquery,
    threads_of_emails,
)

_COLLATIONS = (None, "i;ascii-casemap", "i;unicode-casemap", "i;ascii-numeric", "i;octet")
_KEYWORD = re.compile(r"[\x21-\x7e]{1,255}")
_KEYWORD_FORBIDDEN = frozenset('(){]%*"\\')
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")

_STRING_CONDITIONS = {"from": "e.search_from", "to": "e.search_to", "cc": "e.search_cc", "bcc": "e.search_bcc",
                      "subject": "lower(e.subject)", "body": "e.search_body"}
_CONDITIONS = frozenset({"inMailbox", "inMailboxOtherThan", "before", "after", "minSize", "maxSize",
                         "allInThreadHaveKeyword", "someInThreadHaveKeyword", "noneInThreadHaveKeyword",
                         "hasKeyword", "notKeyword", "hasAttachment", "text", "header", *_STRING_CONDITIONS})
_SORTS = {"receivedAt": "e.received_at", "sentAt": "coalesce(e.sent_at, e.received_at)", "size": "e.size",
          "from": "e.from_sort", "to": "e.to_sort", "subject": "e.subject_sort"}
_THREAD_KEYWORD_SORTS = {"allInThreadHaveKeyword": "NOT EXISTS", "someInThreadHaveKeyword": "EXISTS"}


def valid_keyword(value: object) -> bool:
    """RFC 8621 4.1.1: an IMAP atom (no ``( ) { ] % * " \\``), 1 to 255 printable ASCII characters."""
    return isinstance(value, str) and _KEYWORD.fullmatch(value) is not None and not (set(value) & _KEYWORD_FORBIDDEN)


def _re2_escape(text: str) -> str:
    return "".join(f"\\{c}" if c.isascii() and not c.isalnum() and c not in " _" else c for c in text)


class _Filter:
    def __init__(self) -> None:
        self.args: list[Any] = []

    def compile(self, node: Any, depth: int = 0) -> str:
        if depth > 32:
            raise MethodError("invalidArguments", "filter: nested too deeply")
        if not isinstance(node, dict):
            raise MethodError("invalidArguments", "filter: a FilterOperator or FilterCondition object expected")
        if "operator" in node:
            operator, conditions = node.get("operator"), node.get("conditions")
            if operator not in ("AND", "OR", "NOT") or not isinstance(conditions, list) or set(node) - {
                    "operator", "conditions"}:
                raise MethodError("invalidArguments", "filter: an operator is AND, OR or NOT with a conditions list")
            if not conditions:
                return "true" if operator != "OR" else "false"
            parts = [self.compile(c, depth + 1) for c in conditions]
            if operator == "NOT":
                return f"NOT ({' OR '.join(parts)})"
            return "(" + f" {operator} ".join(parts) + ")"
        parts = [self.condition(name, value) for name, value in node.items()]
        return "(" + " AND ".join(parts) + ")" if parts else "true"

    def _arg(self, value: Any) -> str:
        self.args.append(value)
        return "?"

    def condition(self, name: str, value: Any) -> str:
        if name not in _CONDITIONS:
            raise MethodError("unsupportedFilter", f"filter condition {name!r} is not supported")
        if name == "inMailbox":
            return f"list_contains(e.mailbox_ids, {self._arg(_string(name, value))})"
        if name == "inMailboxOtherThan":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise MethodError("invalidArguments", "filter inMailboxOtherThan: a list of mailbox ids expected")
            return f"NOT list_has_all({self._arg(list(value))}::VARCHAR[], e.mailbox_ids)"
        if name in ("before", "after"):
            try:
                moment = parse_utc(_string(name, value))
            except ValueError:
                raise MethodError("invalidArguments", f"filter {name}: a UTCDate expected") from None
            return f"e.received_at {'<' if name == 'before' else '>='} {self._arg(moment)}"
        if name in ("minSize", "maxSize"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MethodError("invalidArguments", f"filter {name}: an UnsignedInt expected")
            return f"e.size {'>=' if name == 'minSize' else '<'} {self._arg(value)}"
        if name in ("hasKeyword", "notKeyword"):
            keyword = _keyword(name, value)
            return f"{'' if name == 'hasKeyword' else 'NOT '}list_contains(e.keywords, {self._arg(keyword)})"
        if name.endswith("InThreadHaveKeyword"):
            keyword = _keyword(name, value)
            inner = thread_member_subquery(negated=name.startswith("all"))
            self.args.append(keyword)
            return f"{'EXISTS' if name.startswith('some') else 'NOT EXISTS'} ({inner})"
        if name == "hasAttachment":
            if not isinstance(value, bool):
                raise MethodError("invalidArguments", "filter hasAttachment: a boolean expected")
            return f"e.has_attachment = {self._arg(value)}"
        if name == "header":
            return self._header(value)
        text = " ".join(_string(name, value).lower().split())
        if name == "text":
            words = text.split() or [""]
            fields = _STRING_CONDITIONS.values()
            return "(" + " AND ".join("(" + " OR ".join(f"contains({f}, {self._arg(w)})" for f in fields) + ")"
                                      for w in words) + ")"
        if name == "body":
            return "(" + " AND ".join(f"contains(e.search_body, {self._arg(w)})" for w in text.split() or [""]) + ")"
        return f"contains({_STRING_CONDITIONS[name]}, {self._arg(text)})"

    def _header(self, value: Any) -> str:
        if (not isinstance(value, list) or not 1 <= len(value) <= 2 or not all(isinstance(v, str) for v in value)
                or not _HEADER_NAME.fullmatch(value[0])):
            raise MethodError("invalidArguments", "filter header: [name] or [name, text] expected")
        name = value[0].lower()
        if len(value) == 1:
            return f"contains(e.header_text, {self._arg(chr(10) + name + ':')})"
        text = " ".join(value[1].lower().split())
        pattern = "\n" + _re2_escape(name) + ":[^\n]*" + _re2_escape(text)
        return f"regexp_matches(e.header_text, {self._arg(pattern)})"


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MethodError("invalidArguments", f"filter {name}: a string expected")
    return value


def _keyword(name: str, value: Any) -> str:
    if not valid_keyword(value):
        raise MethodError("invalidArguments", f"filter {name}: not a keyword")
    return str(value).lower()


def compile_query(filter_: dict[str, Any] | None, sort: list[Comparator] | None, *, collapse: bool) -> EmailQuery:
    compiler = _Filter()
    where = compiler.compile(filter_) if filter_ is not None else "true"
    order, order_args = compile_sort(sort)
    return EmailQuery(where=where, where_args=compiler.args, order=order, order_args=order_args, collapse=collapse)


def compile_sort(sort: list[Comparator] | None) -> tuple[str, list[Any]]:
    terms: list[str] = []
    args: list[Any] = []
    first_ascending = False
    for i, comparator in enumerate(sort or [Comparator(property="receivedAt", is_ascending=False)]):
        if comparator.collation not in _COLLATIONS:
            raise MethodError("unsupportedSort", f"collation {comparator.collation!r} is not supported")
        direction = "ASC" if comparator.is_ascending else "DESC"
        if i == 0:
            first_ascending = comparator.is_ascending
        if comparator.property in _SORTS:
            terms.append(f"{_SORTS[comparator.property]} {direction}")
        elif comparator.property == "hasKeyword" or comparator.property in _THREAD_KEYWORD_SORTS:
            if not valid_keyword(comparator.keyword):
                raise MethodError("invalidArguments", f"sort {comparator.property}: keyword required")
            keyword = str(comparator.keyword).lower()
            if comparator.property == "hasKeyword":
                terms.append(f"list_contains(e.keywords, ?) {direction}")
            else:
                inner = thread_member_subquery(negated=comparator.property.startswith("all"))
                exists = _THREAD_KEYWORD_SORTS[comparator.property]
                terms.append(f"({exists} ({inner})) {direction}")
            args.append(keyword)
        else:
            raise MethodError("unsupportedSort", f"sort by {comparator.property!r} is not supported")
    terms.append(f"e.email_id {'ASC' if first_ascending else 'DESC'}")
    return ", ".join(terms), args


class QueryResult(msgspec.Struct, frozen=True):
    ids: list[str]
    position: int
    total: int | None


def run_query(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery, *, position: int, anchor: str | None,
              anchor_offset: int, limit: int, calculate_total: bool) -> QueryResult:
    """RFC 8620 5.5's windowing: a position (negative counts from the end), or an anchor and offset."""
    total = None
    if calculate_total or position < 0:
        total = count_matching(con, agent, query)
    if anchor is not None:
        found = position_of(con, agent, query, anchor)
        if found is None:
            raise MethodError("anchorNotFound", "the anchor is not in the results")
        position = max(0, found + anchor_offset)
    elif position < 0:
        position = max(0, (total or 0) + position)
    if limit == 0:
        return QueryResult(ids=[], position=position, total=total)
    ids = matching_page(con, agent, query, limit=limit, offset=position)
    return QueryResult(ids=ids, position=position, total=total)


class QueryChanges(msgspec.Struct, frozen=True):
    removed: list[str]
    added: list[tuple[str, int]]
    total: int | None


def query_changes(con: duckdb.DuckDBPyConnection, agent: str, query: EmailQuery, since: int, *,
                  max_changes: int | None, calculate_total: bool) -> QueryChanges:
    """RFC 8620 5.6: every email changed since ``since`` is removed, and re-added where it now sits.

    With ``collapseThreads`` every email of a touched thread is removed (another may now stand for
    the thread), and whichever stands for it now is added.
    """
    rows = log_threads_since(con, agent, "Email", since)
    changed = unique(r.id for r in rows)
    if max_changes is not None and len(changed) > max_changes:
        raise MethodError("tooManyChanges", f"more than {max_changes} changes")
    removed = changed
    if query.collapse and changed:
        touched = {r.thread_id for r in rows if r.thread_id}
        touched |= threads_of_emails(con, agent, changed)
        members = emails_in_threads(con, agent, sorted(touched))
        removed = unique([*changed, *members])
    added: list[tuple[str, int]] = []
    if removed:
        added = positions_in(con, agent, query, removed)
    total = None
    if calculate_total:
        total = count_matching(con, agent, query)
    return QueryChanges(removed=removed, added=added, total=total)
