"""The JMAP request envelope: auth principal, `using` checks, method dispatch, recording calls."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app import App
from logs import log

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
STALWART = "urn:stalwart:jmap"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the recovery admin, or a user account (by password or API key)."""

    login: str
    account_id: str | None  # None for the admin

    @property
    def is_admin(self) -> bool:
        """The recovery admin (management), not a mail account."""
        return self.account_id is None


class MethodError(Exception):
    """A JMAP method-level error (``["error", {"type": ...}, callId]``)."""

    def __init__(self, kind: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or kind)
        self.body: dict[str, Any] = {"type": kind, **extra}
        if description:
            self.body["description"] = description


# A method takes (app, principal, args, using, responses-so-far) and returns its response(s).
Method = Callable[[App, Principal, dict[str, Any], list[str]], list[tuple[str, dict[str, Any]]]]


def request_error(kind: str, detail: str, status: int = 400) -> tuple[int, dict[str, Any]]:
    """An RFC 7807 problem as JMAP request-level errors are."""
    return status, {"type": f"urn:ietf:params:jmap:error:{kind}", "status": status, "detail": detail}


def handle_request(
    app: App, principal: Principal, body: Any, methods: dict[str, Method]
) -> tuple[int, dict[str, Any]]:
    """Run a JMAP request and build its response (or a request-level error)."""
    if not isinstance(body, dict) or not isinstance(body.get("methodCalls"), list):
        app.state.violation("request: expected an object with 'using' and 'methodCalls' (a list)")
        return request_error("notRequest", "expected {using, methodCalls}")
    using = body.get("using")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        app.state.violation("request.using: expected a list of capability strings")
        return request_error("notRequest", "using must be a list of strings")
    if CORE not in using:
        app.state.violation(f"request.using: {CORE} missing (got {using})")
        return request_error("unknownCapability", f"{CORE} must be in using")
    responses: list[list[Any]] = []
    for call in body["methodCalls"]:
        if not (isinstance(call, list) and len(call) == 3 and isinstance(call[0], str) and isinstance(call[1], dict)):
            app.state.violation(f"methodCalls: each call must be [name, {{args}}, callId], got {call!r}")
            return request_error("notRequest", "malformed method call")
        name, args, call_id = call
        with app.state.lock:
            app.state.requests.append({"method": name, "args": args, "auth": principal.login})
        log("INFO", "jmap.method", f"{name} by {principal.login}", method=name, login=principal.login)
        if name.startswith("x:") and STALWART not in using:
            app.state.violation(f"{name}: using must include {STALWART} (got {using})")
            return request_error("unknownCapability", f"{name} needs {STALWART} in using")
        method = methods.get(name)
        if method is None:
            responses.append(["error", {"type": "unknownMethod", "description": f"{name} is not known"}, call_id])
            continue
        try:
            for response_name, response in method(app, principal, args, using):
                responses.append([response_name, response, call_id])
        except MethodError as error:
            responses.append(["error", error.body, call_id])
        except Exception as error:  # a bug in the stand-in: answer serverFail, say so in the log
            log("ERROR", "jmap.crash", f"{name}: {error!r}", traceback=traceback.format_exc())
            responses.append(["error", {"type": "serverFail", "description": repr(error)}, call_id])
    return 200, {"methodResponses": responses, "sessionState": session_state(app)}


def session_state(app: App) -> str:
    """A state string that changes when accounts change."""
    with app.state.lock:
        return f"s{len(app.state.data['accounts'])}-{app.state.data['nextId']}"


def require_capability(app: App, name: str, using: list[str], capability: str) -> None:
    """Method-level check of ``using``; records a violation and raises unknownMethod-like error."""
    if capability not in using:
        app.state.violation(f"{name}: using must include {capability} (got {using})")
        raise MethodError("unknownMethod", f"{name} needs {capability} in using")
