"""x:Bootstrap: first setup. Writes config.json (the data store) atomically; effective after restart."""

from __future__ import annotations

import json
import os
from typing import Any

from app import App
from jmap import MethodError, Principal
from logs import log

_FIELDS: dict[str, type] = {
    "defaultDomain": str,
    "serverHostname": str,
    "requestTlsCertificate": bool,
    "generateDkimKeys": bool,
}


def bootstrap_get(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """The singleton with the recorded settings."""
    with app.state.lock:
        settings = dict(app.state.data.get("bootstrap") or {})
    return [("x:Bootstrap/get", {"state": "1", "list": [{"id": "singleton", **settings}], "notFound": []})]


def bootstrap_set(app: App, principal: Principal, args: dict[str, Any], using: list[str]) -> list[tuple[str, Any]]:
    """Update ``singleton``: check the fields, record them, write config.json (mode changes on restart)."""
    update = args.get("update")
    response: dict[str, Any] = {"oldState": "1", "newState": "2", "updated": None, "notUpdated": None}
    if args.get("create") or args.get("destroy"):
        app.state.violation("x:Bootstrap/set: only update of 'singleton' is possible (create/destroy given)")
        raise MethodError("invalidArguments", "x:Bootstrap/set takes only update.singleton")
    if not isinstance(update, dict) or set(update) != {"singleton"} or not isinstance(update["singleton"], dict):
        app.state.violation("x:Bootstrap/set.update: expected {\"singleton\": {...}}")
        raise MethodError("invalidArguments", "update must be {\"singleton\": {...}}")
    patch = update["singleton"]
    bad: list[str] = []
    for key, value in patch.items():
        expected = _FIELDS.get(key)
        if expected is None:
            app.state.violation(f"x:Bootstrap.{key}: unknown property (known: {sorted(_FIELDS)})")
            bad.append(key)
        elif not isinstance(value, expected):
            app.state.violation(f"x:Bootstrap.{key}: expected {expected.__name__}, got {value!r}")
            bad.append(key)
    if bad:
        response["notUpdated"] = {"singleton": {"type": "invalidProperties", "properties": bad}}
        return [("x:Bootstrap/set", response)]
    with app.state.lock:
        settings = dict(app.state.data.get("bootstrap") or {})
        settings.update(patch)
        app.state.data["bootstrap"] = settings
        app.state.save()
    write_config(app)
    log("INFO", "bootstrap.set", "bootstrap settings recorded; restart to apply", settings=patch)
    response["updated"] = {"singleton": None}
    return [("x:Bootstrap/set", response)]


def write_config(app: App) -> None:
    """config.json describing the data store, written atomically (it is what ends bootstrap mode)."""
    app.config_path.parent.mkdir(parents=True, exist_ok=True)
    temp = app.config_path.with_suffix(".tmp")
    temp.write_text(json.dumps({"@type": "RocksDb", "path": "/var/lib/stalwart/"}), "utf-8")
    os.replace(temp, app.config_path)
