"""``POST /api/v1/blobs``: an agent uploads the bytes of an attachment, then names its ``blobId`` in a send.

Agent key required (checked before a byte of the body is read); the body is the
file itself, its type the ``Content-Type`` header, its name ``?filename=``. At most
``smtp.max_message_size`` bytes (a larger body is a 413 ``too_large``). A blob is
the uploading agent's only, and expires after 24 hours unused
(``appliance.outbound.blobs``).
"""

from __future__ import annotations

__all__ = ["blob_router", "upload_blob"]

import time
from typing import Any

from litestar import Request, Router, post
from litestar.di import NamedDependency
from litestar.params import FromQuery

from appliance.api.auth import agent_guard, require_agent
from appliance.api.outbound import ERROR_HANDLERS
from appliance.config import ApplianceConfig
from appliance.outbound.blobs import BlobInfo, BlobRejected, clean_content_type, clean_filename, new_blob, save_blob
from appliance.outbound.service import Refused
from appliance.store.database import Database


@post("/api/v1/blobs", status_code=201, guards=[agent_guard])
async def upload_blob(request: Request[Any, Any, Any], db: NamedDependency[Database],
                      filename: FromQuery[str | None] = None) -> BlobInfo:
    """Store the body as a blob of the calling agent: ``{"blobId", "size", "contentType", "filename"}``."""
    agent = require_agent(request)
    try:
        content_type = clean_content_type(request.headers.get("content-type"))
        name = clean_filename(filename)
    except BlobRejected as exc:
        raise Refused(400, "invalid_request", str(exc)) from None
    data = await request.body()
    blob = new_blob(agent=agent, data=data, content_type=content_type, filename=name, now=time.time())
    await db.write(lambda con: save_blob(con, blob))
    return blob.info


def blob_router(config: ApplianceConfig) -> Router:
    """The blob route, its body limit the largest message the appliance takes."""
    return Router(path="/", route_handlers=[upload_blob], request_max_body_size=config.smtp.max_message_size,
                  exception_handlers=ERROR_HANDLERS)
