"""The event stream (server-sent events) for agents without a public webhook URL.

``GET /api/v1/events`` with the agent's key: every event the webhook gets,
same payloads, each with ``id:`` its delivery id. Reconnect with
``Last-Event-ID`` (or ``?lastEventId=``) to continue exactly after it; without
one the stream starts from the agent's oldest retained event.
"""

from __future__ import annotations

__all__ = ["event_stream_handler"]

from collections.abc import AsyncIterator

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from appliance.api.auth import require_agent
from appliance.delivery.dispatcher import Dispatcher
from appliance.delivery.stream import BadCursor, event_stream, resolve_cursor
from appliance.store.database import Database

RETRY_MS = 2000
"""How soon (milliseconds) a disconnected EventSource should reconnect."""


@get("/api/v1/events", name="events")
async def event_stream_handler(request: Request, db: NamedDependency[Database],  # type: ignore[type-arg]
                               dispatcher: NamedDependency[Dispatcher]) -> ServerSentEvent:
    """The agent's events, forever (a ``: keepalive`` comment every 15 quiet seconds).

    Resume with the ``Last-Event-ID`` header or the ``lastEventId`` query parameter.
    """
    agent = require_agent(request)
    resume = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    try:
        cursor = await db.read(lambda con: resolve_cursor(con, agent, resume))
    except BadCursor as exc:
        raise ClientException(str(exc)) from None

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        yield ServerSentEventMessage(data=None, retry=RETRY_MS, comment=f"events for {agent} after {cursor}")
        async for event in event_stream(db, agent, cursor, tokens=dispatcher.tokens,
                                        changed=dispatcher.changed,
                                        closed=lambda: dispatcher.streams_closed):
            if event is None:
                yield ServerSentEventMessage(data=None, comment="keepalive")
            else:
                yield ServerSentEventMessage(id=event.delivery_id, event=event.event_type,
                                             data=event.data.decode())

    return ServerSentEvent(messages())
