"""Forwarding one tool call: the grant checked, the JSON body passed on, the answer passed back, all audited.

``Tools.call`` refuses, without forwarding a byte:

- an unknown tool (404 ``not_found``);
- a capability token that is missing, expired, tampered or another agent's (401 ``token_invalid``);
- a token whose grant lacks the tool's capability (403 ``capability_missing``, naming it);
- a body that is not JSON (400 ``invalid_request``).

Otherwise the body goes to the tool's URL with ``X-Appliance-Agent``,
``X-Appliance-Thread`` and ``X-Appliance-Decision`` (what the token was
issued for), the whole exchange bounded by the tool's ``timeout``; its status
and JSON body come back as they are. A tool that does not answer in time is a
504 ``tool_timeout``, one that cannot be reached or answers something other
than JSON (or more than ``MAX_ANSWER_BYTES``) a 502 ``tool_failed``.

Every call is an ``events`` row, ``tool.called`` or ``tool.refused``, whose
``detail`` is a ``ToolAudit`` (JSON): the tool, the SHA-256 of the arguments,
the status, the latency, the reason and the token's thread, decision and id.
The capability token itself is not passed to the tool.
"""

from __future__ import annotations

__all__ = ["MAX_ANSWER_BYTES", "ToolAnswer", "ToolAudit", "ToolInfo", "Tools"]

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec

from appliance.audit import record_event
from appliance.config import ToolConfig
from appliance.delivery.tokens import Claims, TokenIssuer
from appliance.outbound.service import Refused, verify_token
from appliance.store.database import Database

log = logging.getLogger("appliance.tools")

MAX_ANSWER_BYTES = 1_048_576
"""Bytes of a tool's answer read at most (a bigger answer is a 502)."""
USER_AGENT = "appliance-tools/0.1"


class ToolInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A tool as agents (and the models choosing tools) see it: ``GET /api/v1/tools``."""

    name: str
    description: str
    capability: str
    input_schema: dict[str, Any]


class ToolAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The tool's answer, passed back to the agent as it came."""

    status: int
    body: bytes
    """JSON."""
    latency_ms: float


class ToolAudit(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """The ``detail`` of a ``tool.called`` / ``tool.refused`` events row (JSON)."""

    tool: str
    argument_sha256: str
    status: int
    latency_ms: float
    reason: str | None = None
    """Why it was refused or failed (a reason code); None for a call the tool answered."""
    detail: str | None = None
    capability: str | None = None
    thread_id: str | None = None
    decision_id: str | None = None
    token_id: str | None = None


class Tools:
    """The configured tools, and the calls agents make to them."""

    def __init__(self, *, db: Database, tools: list[ToolConfig], tokens: TokenIssuer,
                 client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.tokens = tokens
        self.clock = clock
        self._tools = {t.name: t for t in tools}
        self._client = client or httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                                   headers={"user-agent": USER_AGENT})

    async def close(self) -> None:
        await self._client.aclose()

    def listing(self) -> list[ToolInfo]:
        """Every configured tool, by name."""
        return [ToolInfo(name=t.name, description=t.description, capability=t.capability,
                         input_schema=t.input_schema) for t in sorted(self._tools.values(), key=lambda t: t.name)]

    async def call(self, agent: str, name: str, arguments: bytes, token: str | None) -> ToolAnswer:
        """Forward ``arguments`` (a JSON document) to tool ``name`` for ``agent``; ``Refused`` when not allowed.

        The tool's answer is returned whatever its status (a 4xx or 5xx of the tool is its answer);
        ``Refused`` is raised for the appliance's own refusals and for a tool that failed to answer.
        """
        started = time.perf_counter()
        digest = hashlib.sha256(arguments).hexdigest()
        tool = self._tools.get(name)
        claims: Claims | None = None
        try:
            if tool is None:
                known = ", ".join(sorted(self._tools)) or "none are configured"
                raise Refused(404, "not_found", f"no tool {name!r} (tools: {known})")
            claims = verify_token(self.tokens, token, agent=agent, now=self.clock())
            if tool.capability not in claims.capabilities:
                granted = ", ".join(claims.capabilities) or "nothing"
                raise Refused(403, "capability_missing",
                              f"tool {name} needs capability {tool.capability!r}; the token grants {granted}")
            try:
                msgspec.json.decode(arguments)
            except msgspec.DecodeError as exc:
                raise Refused(400, "invalid_request", f"the body must be a JSON document: {exc}") from None
        except Refused as refused:
            await self._audit("tool.refused", agent, ToolAudit(
                tool=name, argument_sha256=digest, status=refused.status, latency_ms=_since(started),
                reason=refused.reason, detail=refused.detail, capability=tool.capability if tool else None,
                **_token_fields(claims)))
            raise
        answer = await self._forward(agent, tool, claims, arguments, digest, started)
        return answer

    async def _forward(self, agent: str, tool: ToolConfig, claims: Claims, arguments: bytes, digest: str,
                       started: float) -> ToolAnswer:
        headers = {"content-type": "application/json", "x-appliance-agent": agent,
                   "x-appliance-thread": claims.thread_id, "x-appliance-decision": claims.decision_id}
        failure: Refused | None = None
        status, body = 0, b""
        try:
            # One deadline for the whole exchange: httpx's timeout bounds each read, not the answer.
            async with asyncio.timeout(tool.timeout), self._client.stream(
                    "POST", tool.url, content=arguments, headers=headers, timeout=tool.timeout) as response:
                status = response.status_code
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        failure = Refused(502, "tool_failed",
                                          f"tool {tool.name} answered more than {MAX_ANSWER_BYTES} bytes")
                        break
        except (TimeoutError, httpx.TimeoutException):
            failure = Refused(504, "tool_timeout", f"tool {tool.name} did not answer within {tool.timeout:g} s")
        except httpx.HTTPError as exc:
            failure = Refused(502, "tool_failed", f"tool {tool.name} could not be reached: "
                                                  f"{type(exc).__name__}{f': {exc}' if str(exc) else ''}")
        if failure is None:
            try:
                msgspec.json.decode(body)
            except msgspec.DecodeError:
                failure = Refused(502, "tool_failed", f"tool {tool.name} answered HTTP {status} "
                                                      "with a body that is not JSON")
        latency = _since(started)
        audit = ToolAudit(tool=tool.name, argument_sha256=digest, status=failure.status if failure else status,
                          latency_ms=latency, reason=failure.reason if failure else None,
                          detail=failure.detail if failure else None, capability=tool.capability,
                          **_token_fields(claims))
        await self._audit("tool.called", agent, audit)
        if failure is not None:
            log.warning("tool %s for %s: %s", tool.name, agent, failure.detail)
            raise failure
        return ToolAnswer(status=status, body=body, latency_ms=latency)

    async def _audit(self, kind: str, agent: str, audit: ToolAudit) -> None:
        detail = msgspec.json.encode(audit).decode()
        await self.db.write(lambda con: record_event(con, kind, agent, detail))


def _token_fields(claims: Claims | None) -> dict[str, str | None]:
    if claims is None:
        return {}
    return {"thread_id": claims.thread_id, "decision_id": claims.decision_id, "token_id": claims.jti}


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
