"""A stand-in for Stalwart 0.16: its health, management JMAP, mail JMAP, push, SMTP and MTA hooks.

    python3 server.py --config /etc/stalwart/config.json

Stdlib only (plus ``cryptography`` for DKIM keys). See README.md for the environment and the
/_standin/ control endpoints tests use.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import App, app_from_environment
from jmap import Principal, handle_request, request_error, session_state
from logs import log
from routes import methods_for


class Handler(BaseHTTPRequestHandler):
    """Routes every HTTP request; the App is a class attribute set by ``serve``."""

    app: App
    _raw: bytes = b""
    protocol_version = "HTTP/1.1"
    server_version = "Stalwart/0.16.18"

    def log_message(self, format: str, *args: Any) -> None:
        """Request logs go to our JSON log, not stderr."""

    # -- plumbing

    def _body(self) -> bytes:
        return self._raw

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(value).encode(), content_type)

    def _problem(self, status: int, detail: str) -> None:
        self._json(status, {"type": "about:blank", "status": status, "title": detail, "detail": detail},
                   "application/problem+json")

    def _principal(self) -> Principal | None:
        """Authenticate from the Authorization header: recovery admin, account password or API key."""
        header = self.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        app = self.app
        if scheme.lower() == "basic":
            try:
                login, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
            except ValueError:
                return None
            if app.admin_login is not None and login == app.admin_login and password == app.admin_password:
                return Principal(login=login, account_id=None)
            if not app.configured:
                return None
            with app.state.lock:
                for account in app.state.data["accounts"].values():
                    if account["name"] == login.lower() and password in _passwords(account):
                        return Principal(login=account["name"], account_id=account["id"])
        elif scheme.lower() == "bearer" and app.configured:
            token = credentials.strip()
            with app.state.lock:
                for key in app.state.data["apiKeys"].values():
                    if key["secret"] == token:
                        account = app.state.data["accounts"].get(key["accountId"])
                        if account is not None:
                            return Principal(login=account["name"], account_id=account["id"])
        return None

    def _authenticated(self) -> Principal | None:
        principal = self._principal()
        if principal is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Stalwart Server"')
            body = json.dumps({"type": "about:blank", "status": 401, "title": "Unauthorized",
                               "detail": "You have to authenticate first."}).encode()
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        return principal

    # -- verbs

    def do_GET(self) -> None:
        """GET routes."""
        self._route("GET")

    def do_HEAD(self) -> None:
        """HEAD as GET without a body."""
        self._route("GET")

    def do_POST(self) -> None:
        """POST routes."""
        self._route("POST")

    def _route(self, verb: str) -> None:
        self.app.block_if_hung()
        url = urlsplit(self.path)
        path = url.path
        log("INFO", "http.request", f"{verb} {path}", method=verb, path=path, client=self.client_address[0])
        # Read every body up front, so an unauthenticated or unknown request leaves a clean connection.
        self._raw = self._read_body() if verb == "POST" else b""
        try:
            self._dispatch(verb, path, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:
            log("ERROR", "http.crash", f"{verb} {path}: {error!r}", traceback=traceback.format_exc())
            try:
                self._problem(500, repr(error))
            except OSError:
                self.close_connection = True

    def _dispatch(self, verb: str, path: str, query: dict[str, list[str]]) -> None:
        app = self.app
        if path == "/healthz/live":
            self._send(200, b"", "text/plain")
        elif path == "/healthz/ready":
            ready = app.configured and not app.unhealthy
            self._send(200 if ready else 503, b"", "text/plain")
        elif path.startswith("/_standin/"):
            self._control(verb, path.removeprefix("/_standin/"))
        elif path == "/.well-known/jmap" and verb == "GET":
            self._send(307, b"", "text/plain", {"Location": "/jmap/session"})
        elif path in ("/jmap/session", "/jmap/session/") and verb == "GET":
            principal = self._authenticated()
            if principal is not None:
                self._json(200, session(app, principal))
        elif path in ("/jmap", "/jmap/") and verb == "POST":
            principal = self._authenticated()
            if principal is None:
                return
            raw = self._body()
            try:
                body = json.loads(raw)
            except ValueError:
                app.state.violation("request: body is not JSON")
                status, answer = request_error("notJSON", "the body is not JSON")
            else:
                status, answer = handle_request(app, principal, body, methods_for(app, principal))
            if status == 200:
                self._json(status, answer)
            else:
                self._json(status, answer, "application/problem+json")
        elif path.startswith("/jmap/upload/") and verb == "POST" and app.configured:
            principal = self._authenticated()
            if principal is not None:
                self._upload(principal, path)
        elif path.startswith("/jmap/download/") and verb == "GET" and app.configured:
            principal = self._authenticated()
            if principal is not None:
                self._download(principal, path, query)
        elif path in ("/jmap/eventsource", "/jmap/eventsource/") and verb == "GET" and app.configured:
            principal = self._authenticated()
            if principal is not None:
                self._eventsource(principal, query)
        else:
            self._problem(404, f"{verb} {path} is not served here")

    # -- control endpoints for tests

    def _control(self, verb: str, name: str) -> None:
        app = self.app
        state = app.state
        if verb == "POST" and name == "crash":
            self._json(200, {"crashing": True})
            self.wfile.flush()
            log("ERROR", "standin.crash", "crashing on request (POST /_standin/crash)")
            os._exit(1)
        elif verb == "POST" and name == "hang":
            self._json(200, {"hanging": True})
            self.wfile.flush()
            log("WARN", "standin.hang", "hanging on request: every request blocks from now on")
            app.hung.set()
        elif verb == "POST" and name == "unhealthy":
            app.unhealthy = True
            self._json(200, {"ready": False})
        elif verb == "POST" and name == "healthy":
            app.unhealthy = False
            self._json(200, {"ready": app.configured})
        elif verb == "POST" and name == "forget-changes":
            state.forget_changes()
            self._json(200, {"forgotten": True})
        elif verb == "GET" and name in ("state", "requests", "violations", "outbox", "hook-calls"):
            with state.lock:
                value: Any = {
                    "state": {**state.data, "configured": app.configured},
                    "requests": state.requests,
                    "violations": state.violations,
                    "outbox": state.outbox,
                    "hook-calls": state.hook_calls,
                }[name]
                body = json.dumps(value).encode()
            self._send(200, body, "application/json")
        else:
            self._problem(404, f"{verb} /_standin/{name} is not a control endpoint")

    # -- mail JMAP transport routes

    def _upload(self, principal: Principal, path: str) -> None:
        from mail import upload

        account_id = unquote(path.removeprefix("/jmap/upload/").strip("/"))
        status, answer = upload(self.app, principal, account_id, self._body(),
                                self.headers.get("Content-Type", "application/octet-stream"))
        self._json(status, answer)

    def _download(self, principal: Principal, path: str, query: dict[str, list[str]]) -> None:
        from mail import download

        parts = path.removeprefix("/jmap/download/").split("/")
        if len(parts) < 2:
            self._problem(404, "download path is /jmap/download/{accountId}/{blobId}/{name}")
            return
        content = download(self.app, principal, unquote(parts[0]), unquote(parts[1]))
        if content is None:
            self._problem(404, f"blob {parts[1]} not found in account {parts[0]}")
            return
        accept = (query.get("accept") or ["application/octet-stream"])[0]
        self._send(200, content, accept)

    def _eventsource(self, principal: Principal, query: dict[str, list[str]]) -> None:
        from mail import state_change

        if principal.account_id is None:
            self._problem(403, "the admin has no mail account to watch")
            return
        types_text = (query.get("types") or ["*"])[0]
        types = None if types_text in ("*", "") else set(types_text.split(","))
        close_after_state = (query.get("closeafter") or ["no"])[0] == "state"
        try:
            ping = int((query.get("ping") or ["0"])[0])
        except ValueError:
            ping = 0
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        inbox = self.app.hub.subscribe(principal.account_id)
        try:
            while True:
                try:
                    inbox.get(timeout=ping if ping > 0 else None)
                except Exception:  # queue.Empty: time for a ping
                    self.app.block_if_hung()
                    self.wfile.write(f"event: ping\ndata: {json.dumps({'interval': ping})}\n\n".encode())
                    self.wfile.flush()
                    continue
                self.app.block_if_hung()
                change = state_change(self.app, principal.account_id, types)
                self.wfile.write(f"event: state\ndata: {json.dumps(change)}\n\n".encode())
                self.wfile.flush()
                if close_after_state:
                    return
        except OSError:
            return
        finally:
            self.app.hub.unsubscribe(principal.account_id, inbox)


def _passwords(account: dict[str, Any]) -> list[str]:
    credentials = account.get("credentials") or {}
    return [c.get("secret") for c in credentials.values() if isinstance(c, dict) and c.get("@type") == "Password"]


def session(app: App, principal: Principal) -> dict[str, Any]:
    """The JMAP Session of ``principal`` with URLs under STALWART_PUBLIC_URL."""
    base = app.public_url
    accounts: dict[str, Any] = {}
    primary: dict[str, str] = {}
    if principal.account_id is not None:
        accounts[principal.account_id] = {
            "name": principal.login,
            "isPersonal": True,
            "isReadOnly": False,
            "accountCapabilities": {
                "urn:ietf:params:jmap:core": {},
                "urn:ietf:params:jmap:mail": {
                    "maxMailboxesPerEmail": None, "maxMailboxDepth": 10, "maxSizeMailboxName": 255,
                    "maxSizeAttachmentsPerEmail": 50000000, "emailQuerySortOptions": ["receivedAt"],
                    "mayCreateTopLevelMailbox": True,
                },
                "urn:ietf:params:jmap:submission": {"maxDelayedSend": 0, "submissionExtensions": {}},
            },
        }
        for capability in ("urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:submission"):
            primary[capability] = principal.account_id
    else:
        primary["urn:stalwart:jmap"] = "admin"
    return {
        "capabilities": {
            "urn:ietf:params:jmap:core": {
                "maxSizeUpload": 50000000, "maxConcurrentUpload": 4, "maxSizeRequest": 10000000,
                "maxConcurrentRequests": 4, "maxCallsInRequest": 16, "maxObjectsInGet": 500,
                "maxObjectsInSet": 500, "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap"],
            },
            "urn:ietf:params:jmap:mail": {},
            "urn:ietf:params:jmap:submission": {},
            "urn:stalwart:jmap": {},
        },
        "accounts": accounts,
        "primaryAccounts": primary,
        "username": principal.login,
        "apiUrl": f"{base}/jmap/",
        "downloadUrl": f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}",
        "uploadUrl": f"{base}/jmap/upload/{{accountId}}/",
        "eventSourceUrl": f"{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}&ping={{ping}}",
        "state": session_state(app),
    }


def serve(app: App) -> None:
    """Start SMTP (configured mode) then HTTP, and serve until killed."""
    if app.configured:
        from smtp_server import start_smtp
        from tls import load_certificates

        load_certificates(app)
        start_smtp(app)
    Handler.app = app
    server = ThreadingHTTPServer(app.http_bind, Handler)
    server.daemon_threads = True
    log("INFO", "server.start", f"{'configured' if app.configured else 'bootstrap'} mode, HTTP on "
        f"{app.http_bind[0]}:{server.server_address[1]}", mode="configured" if app.configured else "bootstrap",
        http=f"{app.http_bind[0]}:{app.http_bind[1]}",
        smtp=f"{app.smtp_bind[0]}:{app.smtp_bind[1]}" if app.configured else None,
        dataDir=str(app.state.data_dir))
    if not app.configured and app.admin_login is None:
        log("WARN", "bootstrap.admin", "STALWART_RECOVERY_ADMIN unset: management cannot be authenticated")
    server.serve_forever(poll_interval=0.2)


def main(argv: list[str] | None = None) -> None:
    """Parse ``--config`` and serve; a crash is logged as one JSON line before exiting 1."""
    parser = argparse.ArgumentParser(description="Stalwart 0.16 stand-in")
    parser.add_argument("--config", type=Path, default=Path("/etc/stalwart/config.json"))
    options = parser.parse_args(argv)
    try:
        serve(app_from_environment(options.config))
    except KeyboardInterrupt:
        pass
    except BaseException as error:
        log("ERROR", "server.crash", repr(error), traceback=traceback.format_exc())
        time.sleep(0.05)
        raise SystemExit(1) from error


if __name__ == "__main__":
    threading.current_thread().name = "main"
    main()
