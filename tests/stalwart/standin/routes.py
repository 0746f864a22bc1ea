"""Which JMAP methods a principal may call, in which mode."""

from __future__ import annotations

from typing import Any

from app import App
from bootstrap import bootstrap_get, bootstrap_set
from jmap import Method, MethodError, Principal


def _forbidden(name: str, why: str) -> Method:
    def method(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
        app.state.violation(f"{name}: {why}")
        raise MethodError("forbidden", why)

    return method


_MANAGEMENT_OBJECTS = ("Domain", "DkimSignature", "Account", "ApiKey", "MtaHook", "Certificate", "Action")


def methods_for(app: App, principal: Principal) -> dict[str, Method]:
    """The method table for this mode and principal (bootstrap: only x:Bootstrap)."""
    table: dict[str, Method] = {"x:Bootstrap/get": bootstrap_get, "x:Bootstrap/set": bootstrap_set}
    if not principal.is_admin:
        table = {name: _forbidden(name, "only the administrator may call management methods") for name in table}
    if not app.configured:
        for obj in _MANAGEMENT_OBJECTS:
            for verb in ("get", "set", "query"):
                name = f"x:{obj}/{verb}"
                table[name] = _forbidden(name, "the server is in bootstrap mode (only x:Bootstrap/get|set)")
        return table
    try:
        from management import MANAGEMENT
    except ImportError:
        MANAGEMENT = {}
    try:
        from mail import MAIL_METHODS
    except ImportError:
        MAIL_METHODS = {}
    if principal.is_admin:
        table.update(MANAGEMENT)
    else:
        for name in MANAGEMENT:
            table[name] = _forbidden(name, "only the administrator may call management methods")
        table.update(MAIL_METHODS)
    return table
