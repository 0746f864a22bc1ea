"""A demo agent: receives the appliance's webhooks, checks their signatures, prints what it may do.

    AGENT_WEBHOOK_SECRET=whsec_... python examples/demo_agent.py [PORT]

The wiring an agent needs is here; a real agent would hand ``event.data.text``
to its model with ``event.data.capabilities`` as the tools it may use.
"""

from __future__ import annotations

import contextlib
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.sdk import MessageQuarantined, MessageReceived, WebhookError, verify_webhook

SECRET = os.environ["AGENT_WEBHOOK_SECRET"]
seen: set[str] = set()  # delivery is at least once: deduplicate on webhook-id


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = verify_webhook(dict(self.headers), body, SECRET)
        except WebhookError as exc:
            self.send_response(400)
            self.end_headers()
            print(f"[agent] refused a webhook: {exc}", flush=True)
            return
        self.send_response(204)  # acknowledge first; a slow agent must not be retried
        self.end_headers()
        if self.headers["webhook-id"] in seen:
            return
        seen.add(self.headers["webhook-id"])
        if isinstance(event, MessageReceived):
            d = event.data
            print(f"[agent] mail from {d.sender} ({d.subject!r}), thread {d.thread_id}, "
                  f"auth spf={d.auth.spf} dkim={d.auth.dkim} dmarc={d.auth.dmarc}\n"
                  f"[agent]   may: {', '.join(d.capabilities) or 'nothing'}; budget left: {d.budget}\n"
                  f"[agent]   reads: {d.text[:200]!r}", flush=True)
        elif isinstance(event, MessageQuarantined):
            print(f"[agent] a message from {event.data.sender} is held for review", flush=True)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    except OSError as exc:
        sys.exit(f"[agent] cannot listen on 127.0.0.1:{port}: {exc.strerror}")
    print(f"[agent] demo agent listening on http://127.0.0.1:{port}/hook", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
