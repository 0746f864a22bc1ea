"""The Quarantine page: held mail listed, read safely, released or deleted, each action audited.

The actions are ``appliance.inbound.quarantine``'s, as the admin API and the CLI call them; the
actor recorded is the dashboard session (``appliance.dashboard.actor``). A message is read as the
decision page reads one (``appliance.dashboard.message``): text as text, HTML sanitized and shown
in the decision page's sandboxed frame, attachments listed, never opened.
"""

from __future__ import annotations

__all__ = ["quarantine_delete", "quarantine_list", "quarantine_message", "quarantine_release"]

from typing import Literal
from urllib.parse import urlencode

import anyio
import duckdb
import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from appliance.dashboard.actor import actor
from appliance.dashboard.message import MessageView, view_message
from appliance.dashboard.pages import page
from appliance.dashboard.session import Session
from appliance.delivery.dispatcher import Dispatcher
from appliance.inbound import quarantine
from appliance.store.database import Database
from appliance.store.messages import get_message

Outcome = Literal["released", "deleted", "gone"]
"""What the last action did, shown once above the list (POST, redirect, GET)."""


class _Held(msgspec.Struct, frozen=True, kw_only=True):
    held: quarantine.HeldMessage
    raw: bytes
    """The stored bytes as they are (``HeldMessage.raw`` is decoded for display: a charset would be lost)."""


def _read_held(con: duckdb.DuckDBPyConnection, email_id: str) -> _Held | None:
    held = quarantine.show(con, email_id)
    stored = get_message(con, email_id) if held is not None else None
    if held is None or stored is None:
        return None
    return _Held(held=held, raw=stored.raw)


def _back(done: Outcome, email_id: str) -> Redirect:
    """Back to the list, which says what was done (POST, redirect, GET: a reload does not repeat it)."""
    return Redirect(f"/ui/quarantine?{urlencode({'done': done, 'email': email_id})}", status_code=303)


@get("/quarantine", name="ui_quarantine")
async def quarantine_list(db: NamedDependency[Database], agent: FromQuery[str | None] = None,
                          done: FromQuery[Outcome | None] = None, email: FromQuery[str | None] = None) -> Template:
    """Held messages, newest first (``agent`` narrows to one agent)."""
    chosen = agent.strip().lower() if agent and agent.strip() else None
    rows = await db.read(lambda con: quarantine.list_held(con, chosen, 500))
    return page("quarantine.html", current="quarantine", title="Quarantine", rows=rows, agent=chosen or "",
                done=done, email=email or "")


@get("/quarantine/{email_id:str}", name="ui_quarantine_message")
async def quarantine_message(db: NamedDependency[Database], email_id: FromPath[str]) -> Template:
    """One held message: why it was held, its headers, text, HTML (sandboxed) and attachments."""
    found = await db.read(lambda con: _read_held(con, email_id))
    if found is None:
        return page("not_found.html", current="quarantine", title="Not found", status_code=404,
                    what=f"quarantined message {email_id} (released or deleted already?)")
    view: MessageView = await anyio.to_thread.run_sync(view_message, found.raw)  # parsing may take a while
    return page("quarantine_message.html", current="quarantine", title=f"Held: {found.held.message.subject}",
                held=found.held, view=view)


@post("/quarantine/{email_id:str}/release", status_code=303)
async def quarantine_release(db: NamedDependency[Database], dispatcher: NamedDependency[Dispatcher],
                             ui_session: NamedDependency[Session], email_id: FromPath[str]) -> Redirect:
    """Release the message to its agent (its delivery goes out now); audited with the session as actor."""
    by = actor(ui_session)
    released = await db.write(lambda con: quarantine.release(con, email_id, by=by))
    if released:
        dispatcher.wake()
    return _back("released" if released else "gone", email_id)


@post("/quarantine/{email_id:str}/delete", status_code=303)
async def quarantine_delete(db: NamedDependency[Database], ui_session: NamedDependency[Session],
                            email_id: FromPath[str]) -> Redirect:
    """Delete the message and discard its delivery; audited with the session as actor."""
    by = actor(ui_session)
    deleted = await db.write(lambda con: quarantine.delete(con, email_id, by=by))
    return _back("deleted" if deleted else "gone", email_id)
