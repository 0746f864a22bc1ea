"""One JMAP API request (RFC 8620 3): checked, its method calls run in order, its references resolved.

Request-level errors (``RequestError``: notJSON, notRequest, unknownCapability,
limit) stop the request before any call runs. Each call then either answers
or fails alone with a method-level error: ``unknownMethod`` for a name not
served or whose capability is not in ``using``, ``invalidResultReference``
when a ``#`` argument does not evaluate (RFC 8620 3.7, JSON Pointer with
``*``), ``invalidArguments`` for arguments of the wrong shape, and
``serverFail`` (logged) for anything unexpected. Creation ids live for the
whole request (``createdIds``), so a later call may name what an earlier one
created as ``#creationId``.
"""

from __future__ import annotations

__all__ = ["CAPABILITIES", "METHODS", "Call", "handle", "method", "pointer"]

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from appliance.jmap.proto import CORE, MAIL, SUBMISSION, VENDOR, MethodError, Request, RequestError, ResultReference
from appliance.jmap.service import Caller, JmapService

log = logging.getLogger("appliance.jmap")

CAPABILITIES = (CORE, MAIL, SUBMISSION, VENDOR)

Result = dict[str, Any] | list[tuple[str, dict[str, Any]]]
Handler = Callable[["Call", dict[str, Any]], Awaitable[Result]]


@dataclass(frozen=True)
class _Method:
    capability: str
    handler: Handler


METHODS: dict[str, _Method] = {}


def method(name: str, capability: str) -> Callable[[Handler], Handler]:
    """Register a method handler under ``name``, served when ``capability`` is in ``using``."""

    def register(handler: Handler) -> Handler:
        METHODS[name] = _Method(capability, handler)
        return handler

    return register


@dataclass
class Call:
    """What a method handler knows: the service, the caller, the request's capabilities and creation ids."""

    service: JmapService
    caller: Caller
    using: frozenset[str]
    created_ids: dict[str, str]
    name: str = ""
    call_id: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    """State shared by the request's calls (whether the index was checked against the store)."""

    async def agent(self, account_id: object) -> str:
        return await self.service.agent_for(self.caller, account_id)

    def resolve(self, value: str) -> str | None:
        """An id, or ``#creationId`` of something created earlier in this request; None if unknown."""
        if value.startswith("#"):
            return self.created_ids.get(value[1:])
        return value


def pointer(document: Any, path: str) -> Any:
    """RFC 8620 3.7's JSON Pointer (RFC 6901) with ``*`` mapping over arrays (results flattened)."""
    if path == "":
        return document
    if not path.startswith("/"):
        raise ValueError("a path starts with /")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    return _walk(document, tokens)


def _walk(document: Any, tokens: list[str]) -> Any:
    if not tokens:
        return document
    token, rest = tokens[0], tokens[1:]
    if isinstance(document, list):
        if token == "*":
            out: list[Any] = []
            for item in document:
                value = _walk(item, rest)
                if isinstance(value, list):
                    out.extend(value)
                else:
                    out.append(value)
            return out
        if token.isascii() and token.isdigit() and (token == "0" or not token.startswith("0")):
            index = int(token)
            if index < len(document):
                return _walk(document[index], rest)
        raise ValueError(f"no item {token!r}")
    if isinstance(document, dict) and token in document:
        return _walk(document[token], rest)
    raise ValueError(f"no member {token!r}")


def _resolve(args: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in args.items():
        if not key.startswith("#"):
            out[key] = value
            continue
        plain = key[1:]
        if plain in args:
            raise MethodError("invalidArguments", f"both {plain!r} and {key!r} are given")
        try:
            ref = msgspec.convert(value, ResultReference)
        except msgspec.ValidationError as exc:
            raise MethodError("invalidResultReference", f"{key}: not a ResultReference ({exc})") from None
        found = next((r for r in responses if r[2] == ref.result_of), None)
        if found is None or found[0] != ref.name:
            raise MethodError("invalidResultReference", f"{key}: no {ref.name} response to call {ref.result_of!r}")
        try:
            out[plain] = pointer(found[1], ref.path)
        except ValueError as exc:
            raise MethodError("invalidResultReference", f"{key}: path {ref.path!r} does not evaluate: {exc}") from None
    return out


def _ensure_methods() -> None:
    from appliance.jmap import (  # noqa: F401 - each module registers its methods
        core,
        email,
        identity,
        mailbox,
        snippet,
        submission,
        thread,
    )


_DECODER = msgspec.json.Decoder()


def parse(body: bytes, content_type: str | None) -> Request:
    """The request, or the request-level error that stops it."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise RequestError("notJSON", f"the request's content type is {media or 'missing'}, not application/json")
    try:
        data = _DECODER.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise RequestError("notJSON", "the request body is not I-JSON") from None
    try:
        return msgspec.convert(data, Request)
    except msgspec.ValidationError as exc:
        raise RequestError("notRequest", f"the body is not a JMAP Request: {exc}") from None


async def handle(service: JmapService, caller: Caller, body: bytes, content_type: str | None,
                 session_state: str) -> dict[str, Any]:
    """Run one API request; return the Response object (RFC 8620 3.4)."""
    _ensure_methods()
    request = parse(body, content_type)
    unknown = [u for u in request.using if u not in CAPABILITIES]
    if unknown:
        raise RequestError("unknownCapability", f"not supported: {', '.join(unknown)}")
    if len(request.method_calls) > service.limits.max_calls_in_request:
        raise RequestError("limit", f"more than {service.limits.max_calls_in_request} method calls",
                           limit="maxCallsInRequest")
    await service.ready()
    created_ids = dict(request.created_ids or {})
    using = frozenset(request.using)
    responses: list[list[Any]] = []
    shared: dict[str, Any] = {}
    for name, args, call_id in request.method_calls:
        call = Call(service=service, caller=caller, using=using, created_ids=created_ids, name=name, call_id=call_id,
                    request=shared)
        results: list[tuple[str, dict[str, Any]]]
        try:
            entry = METHODS.get(name)
            if entry is None or entry.capability not in using:
                raise MethodError("unknownMethod", f"{name} is not served" if entry is None else
                                  f"{name} needs {entry.capability} in using")
            answer = await entry.handler(call, _resolve(args, responses))
            results = answer if isinstance(answer, list) else [(name, answer)]
        except MethodError as exc:
            results = [("error", exc.arguments())]
        except msgspec.ValidationError as exc:
            results = [("error", {"type": "invalidArguments", "description": str(exc)})]
        except Exception:
            log.exception("JMAP %s failed", name)
            results = [("error", {"type": "serverFail", "description": "the server failed to process this call"})]
        responses.extend([result_name, result_args, call_id] for result_name, result_args in results)
    response: dict[str, Any] = {"methodResponses": responses, "sessionState": session_state}
    if request.created_ids is not None:
        response["createdIds"] = created_ids
    return response
