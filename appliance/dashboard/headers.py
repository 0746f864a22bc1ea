"""The security headers of every dashboard response, error pages and redirects included.

The pages run no inline script and load nothing from elsewhere (the appliance may have no outside
access, and a message under review must not reach out): ``default-src 'self'``, no inline script
or style, no plugins, no framing by other sites, forms posted only here. A response that sets its
own ``Content-Security-Policy`` keeps it (the message frame's is stricter still: ``MESSAGE_CSP``).
"""

from __future__ import annotations

__all__ = ["MESSAGE_CSP", "PAGE_CSP", "page_csp", "security_headers", "unrouted_security_headers"]

from collections.abc import Iterable

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"

_PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'{styles}; img-src 'self' data:; "
             "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
PAGE_CSP = _PAGE_CSP.format(styles="")
"""Every dashboard page's policy."""
MESSAGE_CSP = ("sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
               "frame-ancestors 'self'; form-action 'none'; base-uri 'none'")
"""A message's HTML: a sandbox with no script, no network (pictures only as ``data:``), framed only by us."""



def page_csp(style_hashes: Iterable[str]) -> str:
    """The page policy, also allowing the inline stylesheets with these ``'sha256-...'`` hashes (a chart's)."""
    return _PAGE_CSP.format(styles="".join(f" {h}" for h in sorted(set(style_hashes))))


_COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",  # pages show messages and audit rows: no copies in shared caches or history
    "cross-origin-opener-policy": "same-origin",
}


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware adding the CSP (unless the response set its own) and the common headers."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            _add_headers(message)
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


def _add_headers(message: Message) -> None:
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        csp = headers.get("content-security-policy")
        if csp is None:
            headers["content-security-policy"] = PAGE_CSP
        headers["x-frame-options"] = "SAMEORIGIN" if csp == MESSAGE_CSP else "DENY"
        for name, value in _COMMON.items():
            if name not in headers:
                headers[name] = value


async def unrouted_security_headers(message: Message, scope: Scope) -> None:
    """The same headers on what Litestar answers under /ui before any dashboard route runs (a 404 of an
    unknown path, a 405 of a method no page takes): an app-level ``before_send`` hook."""
    path = scope.get("path", "")
    if scope["type"] == ScopeType.HTTP and (path == PREFIX or path.startswith(PREFIX + "/")):
        _add_headers(message)
