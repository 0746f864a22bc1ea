"""What every dashboard page shares: the template engine, the navigation, and ``page()`` to render one.

Templates live in ``appliance/dashboard/templates`` and extend ``base.html`` (the layout, the nav,
the logout form). Jinja escapes every value (autoescape) and refuses an undefined name
(``StrictUndefined``), so a typo is an error in the tests, not an empty cell in production.
``{{ csrf_field() }}`` writes the session's CSRF field into a form.
"""

from __future__ import annotations

__all__ = ["NAV", "NavEntry", "page", "template_config"]

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup, escape

from appliance.dashboard.charts import Chart
from appliance.dashboard.guard import CSRF_FIELD
from appliance.dashboard.headers import page_csp
from appliance.dashboard.session import Session

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


class NavEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the navigation bar: where it goes and what it says (``key`` marks the current page)."""

    key: str
    path: str
    label: str


NAV = (
    NavEntry(key="overview", path="/ui/", label="Overview"),
    NavEntry(key="decisions", path="/ui/decisions", label="Decisions"),
    NavEntry(key="quarantine", path="/ui/quarantine", label="Quarantine"),
    NavEntry(key="deliveries", path="/ui/deliveries", label="Deliveries"),
    NavEntry(key="domains", path="/ui/domains", label="Domains"),
    NavEntry(key="policies", path="/ui/policies", label="Policies"),
    NavEntry(key="replay", path="/ui/replay", label="Replay"),
)
"""The dashboard's pages, in the order the bar shows them."""


def _csrf_field(context: Mapping[str, Any], /) -> Markup:
    request: Request[Any, Any, Any] = context["request"]
    session: Session | None = getattr(request.state, "ui_session", None)
    token = session.csrf if session is not None else context.get("login_csrf", "")
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, escape(token))


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's template engine: Jinja over the dashboard's templates, escaping everything."""
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    engine = JinjaTemplateEngine.from_environment(environment)
    engine.register_template_callable("csrf_field", _csrf_field)
    return TemplateConfig(instance=engine)


def page(name: str, *, current: str, title: str, status_code: int = 200, charts: Sequence[Chart] = (),
         **context: Any) -> Template:
    """Render template ``name`` (which extends ``base.html``) with the nav marking ``current``.

    ``charts`` are the SVG charts the page shows inline: the page's CSP allows their stylesheets.
    """
    headers = {"content-security-policy": page_csp(c.style_hash for c in charts)} if charts else None
    return Template(template_name=name, status_code=status_code, headers=headers,
                    context={"nav": NAV, "current": current, "title": title, **context})
