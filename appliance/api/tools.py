"""Operator tools over HTTP: ``GET /api/v1/tools`` lists them, ``POST /api/v1/tools/{name}`` calls one.

Agent key required, and for a call a capability token (``X-Capability-Token``, or
``capabilityToken`` in a JSON object body, which is then not passed on) granting
the tool's capability. The body, JSON, is forwarded to the tool; its status and
JSON body come back unchanged. Refusals are ``{"error", "detail"}``: 401
``token_invalid``, 403 ``capability_missing``, 404 ``not_found``, 502/504 when the
tool fails (``appliance.tools.forward``).
"""

from __future__ import annotations

__all__ = ["call_tool", "list_tools", "tools_router"]

from typing import Any

import msgspec
from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Response

from appliance.api.auth import agent_guard, require_agent
from appliance.api.outbound import ERROR_HANDLERS
from appliance.tools import ToolInfo, Tools


def _token_from_body(body: bytes) -> tuple[str | None, bytes]:
    """``capabilityToken`` of a JSON object body, and the body without it (unchanged when absent)."""
    if b"capabilityToken" not in body:
        return None, body
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None, body
    if not isinstance(document, dict) or not isinstance(document.get("capabilityToken"), str):
        return None, body
    token = document.pop("capabilityToken")
    return token, msgspec.json.encode(document)


@get("/api/v1/tools", guards=[agent_guard])
async def list_tools(tools: NamedDependency[Tools]) -> list[ToolInfo]:
    """Every tool: its name, what it does, the capability it needs and the JSON schema of its input."""
    return tools.listing()


@post("/api/v1/tools/{name:str}", guards=[agent_guard])
async def call_tool(request: Request[Any, Any, Any], tools: NamedDependency[Tools],
                    name: FromPath[str]) -> Response[bytes]:
    """Call tool ``name`` with the JSON body; the tool's status and JSON answer, as it gave them."""
    agent = require_agent(request)
    body = await request.body()
    token = request.headers.get("x-capability-token") or None
    if token is None:
        token, body = _token_from_body(body)
    answer = await tools.call(agent, name, body, token)
    return Response(answer.body, status_code=answer.status, media_type="application/json")


def tools_router() -> Router:
    """The tool routes, their errors and the tools provided."""
    return Router(path="/", route_handlers=[list_tools, call_tool], exception_handlers=ERROR_HANDLERS)
