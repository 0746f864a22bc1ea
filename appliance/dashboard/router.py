"""The dashboard as one Litestar Router at ``/ui``, and its static files at ``/ui/static``.

Every page is listed in ``_PAGES``; the router gives each the session guard (and its CSRF check
on POST), the security headers, the login redirect and the ``sessions``/``ui_session``
dependencies. A page's other needs (``db``, ``config``, ``policies``...) come from the mode's
services, as for the API's handlers.
"""

from __future__ import annotations

__all__ = ["dashboard_routes"]

from litestar import Router
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from appliance.config import ApplianceConfig
from appliance.dashboard.decisions import decision_message_html, decision_page, decisions_list
from appliance.dashboard.deliveries import (
    deliveries_list,
    delivery_page,
    delivery_replay,
    delivery_retry,
    endpoint_enable,
)
from appliance.dashboard.domains import domain_check, domain_page, domains_list
from appliance.dashboard.guard import LoginRequired, error_page, login_redirect, session_guard, ui_session
from appliance.dashboard.headers import security_headers
from appliance.dashboard.login import login_form, login_submit, logout
from appliance.dashboard.overview import overview
from appliance.dashboard.pages import STATIC
from appliance.dashboard.policies import policies_page
from appliance.dashboard.quarantine import quarantine_delete, quarantine_list, quarantine_message, quarantine_release
from appliance.dashboard.replay import replay_form, replay_run
from appliance.dashboard.session import SessionBook

_PAGES: list[ControllerRouterHandler] = [
    login_form, login_submit, logout,
    overview,
    decisions_list, decision_page, decision_message_html,
    quarantine_list, quarantine_message, quarantine_release, quarantine_delete,
    deliveries_list, delivery_page, delivery_retry, delivery_replay, endpoint_enable,
    domains_list, domain_page, domain_check,
    policies_page,
    replay_form, replay_run,
]
"""Every dashboard route (paths relative to ``/ui``)."""


def dashboard_routes(config: ApplianceConfig) -> list[ControllerRouterHandler]:
    """The ``/ui`` router (its own session book: sessions belong to one running app) and the static files."""
    sessions = SessionBook(lifetime=config.http.session_hours * 3600)

    def provide_sessions() -> SessionBook:
        return sessions

    ui = Router(path="/ui", route_handlers=_PAGES, guards=[session_guard(sessions)], middleware=[security_headers],
                exception_handlers={LoginRequired: login_redirect, HTTPException: error_page},  # pages, not JSON
                dependencies={"sessions": Provide(provide_sessions, sync_to_thread=False),
                              "ui_session": Provide(ui_session, sync_to_thread=False)},
                include_in_schema=False)
    static = create_static_files_router(path="/ui/static", directories=[STATIC], name="ui_static",
                                        middleware=[security_headers], include_in_schema=False)
    return [ui, static]
