"""A real HTTPS server on 127.0.0.1 (a thread) serving MTA-STS policies, with a trustme certificate."""

from __future__ import annotations

__all__ = ["PolicyServer"]

import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme


@dataclass
class Answer:
    status: int = 200
    body: str = ""
    content_type: str = "text/plain"
    location: str | None = None


class PolicyServer:
    """Serves ``answers[host]`` at ``/.well-known/mta-sts.txt`` (by Host header); counts requests per host."""

    def __init__(self, ca: trustme.CA, *hosts: str) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, str]] = []
        """(Host header, path) of every request."""
        self.sni: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*hosts).configure_cert(context)
        context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment,func-returns-value]
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("host") or "").split(":")[0]
                owner.requests.append((host, self.path))
                answer = owner.answers.get(host, Answer(status=404, body="not found"))
                if self.path != "/.well-known/mta-sts.txt":
                    answer = Answer(status=404, body="not found")
                body = answer.body.encode()
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                self.send_header("content-length", str(len(body)))
                if answer.location:
                    self.send_header("location", answer.location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def serve(self, host: str, *, mode: str = "enforce", mx: list[str], max_age: int = 86400) -> None:
        lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
        self.answers[host] = Answer(body="\r\n".join(lines) + "\r\n")

    def count(self, host: str) -> int:
        return sum(1 for h, _ in self.requests if h == host)

    def __enter__(self) -> PolicyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
