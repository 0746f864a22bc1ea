"""Wiring: webhooks in, a planner decides (Claude when ANTHROPIC_API_KEY is set), the SDK acts.
    AGENT_WEBHOOK_SECRET=... AGENT_API_KEY=... APPLIANCE_URL=... python -m examples.scheduling_agent.agent [PORT]"""

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appliance.sdk import Client, MessageReceived, WebhookError, verify_webhook

from .claude import ClaudePlanner
from .planner import Planner, describe

SECRET, client = os.environ["AGENT_WEBHOOK_SECRET"], Client.from_env()
brain = ClaudePlanner(client) if os.environ.get("ANTHROPIC_API_KEY") else Planner(client)
seen: set[str] = set()  # delivery is at least once: deduplicate on webhook-id


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = verify_webhook(dict(self.headers), body, SECRET)
        except WebhookError:
            return self.send_error(400)
        self.send_response(204)  # acknowledge first: a slow model must not make the appliance retry
        self.end_headers()
        if isinstance(event, MessageReceived) and self.headers["webhook-id"] not in seen:
            seen.add(self.headers["webhook-id"])
            print(describe(event.data), flush=True)
            brain.handle(event.data)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"[agent] scheduling agent ({type(brain).__name__}) on http://127.0.0.1:{port}/hook", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Hook).serve_forever()
