"""A real webhook receiver on 127.0.0.1 (a thread): records every request, answers as scripted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when the request arrived."""


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    """Seconds to wait before answering (a slow or hung endpoint)."""


Script = Callable[[int, Received], Answer]
"""(index of the request, the request) -> the answer."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (a timed-out attempt) is expected here


class WebhookReceiver:
    """``with WebhookReceiver(script) as r: r.url``; ``r.requests`` lists what arrived."""

    def __init__(self, script: Script | None = None, *, port: int = 0, host: str = "127.0.0.1") -> None:
        """``host``: the address to listen on (a Docker bridge's gateway lets containers reach it)."""
        self.script: Script = script or (lambda i, r: Answer())
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                got = Received(headers={k.lower(): v for k, v in self.headers.items()},
                               body=self.rfile.read(length), at=time.monotonic())
                with receiver._arrived:
                    index = len(receiver.requests)
                    receiver.requests.append(got)
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    receiver._arrived.notify_all()
                try:
                    answer = receiver.script(index, got)
                    if answer.delay:
                        time.sleep(answer.delay)
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server((host, port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``count`` requests arrived (AssertionError after ``timeout``)."""
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            assert ok, f"expected {count} webhook request(s), got {len(self.requests)}"
            return list(self.requests)

    async def arrived(self, count: int, within: float = 5.0) -> list[Received]:
        """``wait_for`` for async tests (never blocks the event loop the dispatcher runs in)."""
        import asyncio

        deadline = time.monotonic() + within
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"expected {count} webhook request(s), got {len(self.requests)}"
            await asyncio.sleep(0.005)
        return list(self.requests)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


RawScript = Callable[[int, socket.socket], None]
"""(index of the request, the connection, its request already read) -> writes whatever it likes, then returns."""


class RawReceiver:
    """A receiver that answers at the socket level (dripping, cut-short answers): ``with RawReceiver(script) as r``.

    Each connection's request (head and Content-Length body) is read, then ``script`` writes the answer;
    the connection is closed when it returns. ``r.served`` counts the requests read.
    """

    def __init__(self, script: RawScript) -> None:
        self.script = script
        self.served = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                index, self.served = self.served, self.served + 1
                self.script(index, conn)
            except OSError:
                pass  # the client gave up (a timed-out attempt): expected here

    def __enter__(self) -> RawReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
