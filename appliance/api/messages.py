"""An agent fetches what its events point at: the whole body, the raw message, an attachment.

Agent key required; an agent sees only its own messages, and only once they
were let through (a quarantined message is not the agent's to read).
"""

from __future__ import annotations

__all__ = ["MessageBody", "MessageController"]

import asyncio
import re

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Response

from appliance.api.auth import require_agent
from appliance.errors import ApplianceError
from appliance.inbound.readers import ReaderPool
from appliance.mail import attachment_part, parse_tree, read_message
from appliance.store.database import Database
from appliance.store.messages import INBOX, StoredMessage, get_message

_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")


class MessageBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The whole readable body, never cut (the event's ``text`` and ``html`` may be)."""

    email_id: str
    text: str
    html: str | None


async def _own(request: Request, db: NamedDependency[Database], email_id: str) -> StoredMessage:  # type: ignore[type-arg]
    agent = require_agent(request)
    stored = await db.read(lambda con: get_message(con, email_id))
    if stored is None or stored.agent != agent or stored.mailbox != INBOX:
        raise NotFoundException(f"no message {email_id}")
    return stored


class MessageController(Controller):
    path = "/api/v1/messages"

    @get("/{email_id:str}/raw", media_type="message/rfc822")
    async def raw(self, request: Request, db: NamedDependency[Database], email_id: FromPath[str]) -> Response[bytes]:  # type: ignore[type-arg]
        """The message as stored: the appliance's Authentication-Results and decision headers, then the original."""
        stored = await _own(request, db, email_id)
        return Response(stored.raw, media_type="message/rfc822",
                        headers={"x-content-type-options": "nosniff"})

    @get("/{email_id:str}/body")
    async def body(self, request: Request, db: NamedDependency[Database], reader: NamedDependency[ReaderPool],  # type: ignore[type-arg]
                   email_id: FromPath[str]) -> MessageBody:
        stored = await _own(request, db, email_id)
        # Read as the gate read it: in a reader process, off the event loop.
        read = await reader.read(read_message(stored.raw))
        if read.readable is None:
            raise NotFoundException(f"message {email_id} cannot be read")
        return MessageBody(email_id=email_id, text=read.readable.agent_text, html=read.readable.html)

    @get("/{email_id:str}/attachments/{index:int}")
    async def attachment(self, request: Request, db: NamedDependency[Database], email_id: FromPath[str],  # type: ignore[type-arg]
                         index: FromPath[int]) -> Response[bytes]:
        """The bytes of attachment ``index`` (as numbered in the event's ``attachments``)."""
        stored = await _own(request, db, email_id)
        try:
            found = await asyncio.to_thread(lambda: attachment_part(parse_tree(stored.raw)[1], index))
        except ApplianceError as exc:  # stored under older, looser limits than today's
            raise NotFoundException(f"message {email_id} cannot be read: {exc}") from exc
        if found is None:
            raise NotFoundException(f"message {email_id} has no attachment {index}")
        info, data = found
        filename = _SAFE_FILENAME.sub("_", info.filename or f"attachment-{index}")
        return Response(data, media_type=info.content_type, headers={
            "content-disposition": f'attachment; filename="{filename}"',
            "x-content-type-options": "nosniff",
        })
