"""The operator dashboard at ``/ui``: server-rendered pages (Jinja), server-made SVG charts, no script.

``dashboard_routes(config)`` is what a mode mounts; ``template_config()`` the app's template engine.
Log in with the admin token (``login``); every other page needs the session (``guard``).
"""

from __future__ import annotations

__all__ = ["dashboard_routes", "template_config"]

from appliance.dashboard.pages import template_config
from appliance.dashboard.router import dashboard_routes
