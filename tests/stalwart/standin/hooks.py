"""MTA hooks as Stalwart 0.16 calls them: the request (wire format of stalwart.md), the HTTP call,
and what the answer means (verdict + modifications). Hooks run in creation order; the first
non-accept ends the chain."""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import SERVER_NAME, App
from logs import log
from message import Header

_ACTIONS = ("accept", "reject", "discard", "quarantine")
_MODIFICATIONS = {
    "addHeader": ("name", "value"), "insertHeader": ("index", "name", "value"),
    "changeHeader": ("index", "name", "value"), "deleteHeader": ("index", "name"),
    "changeFrom": ("value",), "addRecipient": ("value",), "deleteRecipient": ("value",),
    "replaceContents": ("value",),
}


@dataclass(frozen=True)
class Client:
    """The SMTP client as the hook's context.client (and sasl when authenticated)."""

    ip: str
    port: int
    helo: str | None
    server_ip: str
    server_port: int
    login: str | None = None
    ptr: str | None = None


@dataclass
class Verdict:
    """The chain's outcome: ``accept``/``reject``/``discard``/``quarantine``/``tempfail`` and the reply."""

    action: str = "accept"
    reply: str | None = None  # "550 5.7.1 text" when a hook chose one (or the default for reject/tempfail)
    disconnect: bool = False
    modifications: list[dict[str, Any]] = field(default_factory=list)
    message: str | None = None  # the hook's own response.message, for EmailSubmission errors


def request_body(stage: str, client: Client, mail_from: str | None, rcpts: list[str],
                 queue_id: str | None = None, message: tuple[list[Header], bytes, int] | None = None
                 ) -> dict[str, Any]:
    """The JSON Stalwart POSTs at ``stage``."""
    context: dict[str, Any] = {
        "stage": stage,
        "client": {"ip": client.ip, "port": client.port, "ptr": client.ptr, "helo": client.helo,
                   "activeConnections": 1},
    }
    if client.login is not None:
        context["sasl"] = {"login": client.login}
    context["server"] = {"name": SERVER_NAME, "port": client.server_port, "ip": client.server_ip}
    if stage == "data" and queue_id is not None:
        context["queue"] = {"id": queue_id}
    context["protocol"] = {"version": 1}
    body: dict[str, Any] = {"context": context}
    if mail_from is not None:
        body["envelope"] = {"from": {"address": mail_from.lower()}, "to": [{"address": r.lower()} for r in rcpts]}
    if message is not None:
        headers, contents, size = message
        body["message"] = {"headers": [[name, value] for name, value in headers],
                           "contents": contents.decode("utf-8", "surrogateescape"), "size": size}
    return body


def _secret(key: dict[str, Any]) -> str:
    kind = key.get("@type")
    if kind == "Value":
        return str(key["secret"])
    if kind == "EnvironmentVariable":
        return os.environ[key["variableName"]]
    return Path(key["filePath"]).read_text("utf-8").strip()


def _headers(hook: dict[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **(hook.get("httpHeaders") or {})}
    auth = hook.get("httpAuth")
    if isinstance(auth, dict) and auth.get("@type") == "Bearer":
        headers["Authorization"] = f"Bearer {_secret(auth['bearerToken'])}"
    elif isinstance(auth, dict) and auth.get("@type") == "Basic":
        pair = f"{auth['username']}:{_secret(auth['secret'])}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    return headers


def _enabled(hook: dict[str, Any], stage: str) -> bool:
    enable = hook.get("enable", {"else": "true"})
    on = str(enable.get("else", "true")).lower() == "true" if isinstance(enable, dict) else bool(enable)
    return on and bool((hook.get("stages") or {}).get(stage))


class HookError(Exception):
    """Non-2xx, timeout, bad JSON, oversized or malformed answer."""


def _validated(answer: Any, stage: str) -> dict[str, Any]:
    if not isinstance(answer, dict) or answer.get("action") not in _ACTIONS:
        raise HookError(f"response: 'action' must be one of {list(_ACTIONS)}, got {answer!r}")
    response = answer.get("response")
    if response is not None and not isinstance(response, dict):
        raise HookError(f"response.response: expected an object, got {response!r}")
    modifications = answer.get("modifications") or []
    if not isinstance(modifications, list):
        raise HookError(f"response.modifications: expected a list, got {modifications!r}")
    for number, change in enumerate(modifications):
        kind = change.get("type") if isinstance(change, dict) else None
        if kind not in _MODIFICATIONS:
            raise HookError(f"modifications[{number}].type: expected one of {list(_MODIFICATIONS)}, got {kind!r}")
        for name in _MODIFICATIONS[kind]:
            if name not in change:
                raise HookError(f"modifications[{number}] ({kind}): '{name}' missing")
        parameters = change.get("parameters")
        if parameters is not None and (not isinstance(parameters, dict)
                                       or any(v is not None and not isinstance(v, str) for v in parameters.values())):
            raise HookError(f"modifications[{number}].parameters: values must be strings or null, got {parameters!r}")
    return answer


def call_hook(app: App, hook: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """POST the request to one hook; its validated answer (HookError when it cannot be used)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(hook["url"], data=data, headers=_headers(hook), method="POST")
    timeout = float(hook.get("timeout", 30000)) / 1000
    limit = int(hook.get("maxResponseSize", 52428800))
    context = ssl._create_unverified_context() if hook.get("allowInvalidCerts") else None
    record: dict[str, Any] = {"hookId": hook["id"], "url": hook["url"], "stage": body["context"]["stage"],
                              "request": body}
    try:
        try:
            # No proxies from the environment: hooks are called directly, as Stalwart does.
            handlers: list[Any] = [urllib.request.ProxyHandler({})]
            if context is not None:
                handlers.append(urllib.request.HTTPSHandler(context=context))
            opener = urllib.request.build_opener(*handlers)
            with opener.open(request, timeout=timeout) as response:
                status = response.status
                text = response.read(limit + 1)
        except urllib.error.HTTPError as error:
            record["status"] = error.code
            raise HookError(f"HTTP {error.code} from {hook['url']}") from error
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise HookError(f"{hook['url']}: {error!r}") from error
        record["status"] = status
        if len(text) > limit:
            raise HookError(f"response larger than maxResponseSize {limit}")
        try:
            answer = json.loads(text)
        except ValueError as error:
            record["response"] = text.decode("utf-8", "replace")
            raise HookError(f"response is not JSON: {text[:200]!r}") from error
        record["response"] = answer
        return _validated(answer, body["context"]["stage"])
    except HookError as error:
        record["error"] = str(error)
        raise
    finally:
        with app.state.lock:
            app.state.hook_calls.append(record)
        log("INFO", "hook.call", f"{record['stage']} hook {hook['id']} -> {record.get('status')}",
            hookId=hook["id"], stage=record["stage"], status=record.get("status"), error=record.get("error"),
            action=(record.get("response") or {}).get("action") if isinstance(record.get("response"), dict) else None)


def _reply(response: dict[str, Any] | None) -> tuple[str | None, bool, str | None]:
    if not response or response.get("status") is None or not response.get("message"):
        return None, bool((response or {}).get("disconnect")), None
    enhanced = response.get("enhanced_status") or response.get("enhancedStatus")
    text = f"{response['status']} {enhanced + ' ' if enhanced else ''}{response['message']}"
    return text, bool(response.get("disconnect")), str(response["message"])


def run_hooks(app: App, stage: str, body: dict[str, Any]) -> Verdict:
    """Every enabled hook of ``stage`` in order, until one does not accept."""
    with app.state.lock:
        hooks = sorted((dict(h) for h in app.state.data["hooks"].values() if _enabled(h, stage)),
                       key=lambda h: h.get("order", 0))
    verdict = Verdict()
    for hook in hooks:
        try:
            answer = call_hook(app, hook, body)
        except (HookError, KeyError, OSError) as error:
            if hook.get("tempFailOnError", True):
                log("WARN", "hook.tempfail", f"hook {hook['id']} failed: {error}", hookId=hook["id"])
                return Verdict(action="tempfail", reply="451 4.3.5 Unable to accept message at this time.",
                               message=str(error))
            log("WARN", "hook.skipped", f"hook {hook['id']} failed and is skipped: {error}", hookId=hook["id"])
            continue
        reply, disconnect, text = _reply(answer.get("response"))
        if stage == "data":
            verdict.modifications.extend(answer.get("modifications") or [])
        action = answer["action"]
        if action == "accept":
            if reply is not None:
                verdict.reply = reply
            continue
        if action == "reject":
            return Verdict(action="reject", reply=reply or "503 5.5.3 Message rejected.", disconnect=disconnect,
                           message=text or "Message rejected.")
        return Verdict(action=action, reply=reply, disconnect=disconnect, modifications=verdict.modifications,
                       message=text)
    return verdict


def apply_modifications(headers: list[Header], body: bytes, mail_from: str, rcpts: list[str],
                        modifications: list[dict[str, Any]]) -> tuple[list[Header], bytes, str, list[str]]:
    """The message and envelope after a data-stage hook's changes.

    addHeader prepends (as Stalwart writes added fields above the received ones); insertHeader's
    index is a position in the field list (0 = top); changeHeader/deleteHeader's index is the
    1-based occurrence among fields of that name; replaceContents replaces the body.
    """
    headers = list(headers)
    rcpts = list(rcpts)

    def raw(value: str) -> str:
        return (value if value[:1] in (" ", "\t") else " " + value) + "\r\n"

    def position(name: str, index: int) -> int | None:
        seen = 0
        for number, (field_name, _) in enumerate(headers):
            if field_name.lower() == name.lower():
                seen += 1
                if seen == max(index, 1):
                    return number
        return None

    for change in modifications:
        kind = change["type"]
        if kind == "addHeader":
            headers.insert(0, (change["name"], raw(str(change["value"]))))
        elif kind == "insertHeader":
            headers.insert(max(0, min(int(change["index"]), len(headers))), (change["name"], raw(str(change["value"]))))
        elif kind == "changeHeader":
            where = position(change["name"], int(change["index"]))
            if where is None:
                headers.append((change["name"], raw(str(change["value"]))))
            else:
                headers[where] = (change["name"], raw(str(change["value"])))
        elif kind == "deleteHeader":
            where = position(change["name"], int(change["index"]))
            if where is not None:
                del headers[where]
        elif kind == "changeFrom":
            mail_from = str(change["value"]).lower()
        elif kind == "addRecipient":
            if str(change["value"]).lower() not in rcpts:
                rcpts.append(str(change["value"]).lower())
        elif kind == "deleteRecipient":
            rcpts = [r for r in rcpts if r != str(change["value"]).lower()]
        elif kind == "replaceContents":
            body = str(change["value"]).encode()
    return headers, body, mail_from, rcpts
