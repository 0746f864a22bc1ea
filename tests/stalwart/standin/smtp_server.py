"""SMTP listener (placeholder until the full session lands)."""

from __future__ import annotations

import socketserver

from app import App


class _Session(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"220 standin ESMTP\r\n")
        for line in self.rfile:
            if line.upper().startswith(b"QUIT"):
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            self.wfile.write(b"502 5.5.1 not yet\r\n")


def start_smtp(app: App) -> None:
    """Listen on STANDIN_SMTP in a background thread."""
    import threading

    server = socketserver.ThreadingTCPServer(app.smtp_bind, _Session)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="smtp").start()
