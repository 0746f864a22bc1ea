"""What handlers may ask for by name (Litestar dependency injection): the parts the runtime started.

A handler declares ``db: Database`` or ``outbox: Outbox`` and gets the running
one; it never reaches through ``Runtime``. A part asked for before the
appliance has started is a 503, not an AttributeError.
"""

from __future__ import annotations

__all__ = ["services"]

from collections.abc import Callable
from typing import TypeVar

from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ServiceUnavailableException

from appliance.config import ApplianceConfig
from appliance.delivery.dispatcher import Dispatcher
from appliance.inbound.readers import ReaderPool
from appliance.inbound.reception import Reception
from appliance.jmap.service import JmapService, for_runtime
from appliance.outbound.service import Outbox
from appliance.policy.book import PolicyBook
from appliance.runtime import Runtime
from appliance.store.database import Database
from appliance.tools import Tools

T = TypeVar("T")


def _started(runtime: Runtime, attribute: str, kind: type[T], name: str) -> T:
    part = getattr(runtime, attribute, None)  # unset until start() made it
    if not isinstance(part, kind):
        raise ServiceUnavailableException(f"the appliance is starting ({name} is not running yet)")
    return part


def services(runtime: Runtime) -> dict[str, Provide]:
    """The dependencies every mode provides, read from ``runtime`` at each request."""

    def config() -> ApplianceConfig:
        return runtime.config

    def db() -> Database:
        return _started(runtime, "db", Database, "the database")

    def policies() -> PolicyBook:
        return _started(runtime, "policies", PolicyBook, "the policy book")

    def reception() -> Reception:
        return _started(runtime, "reception", Reception, "reception")

    def dispatcher() -> Dispatcher:
        return _started(runtime, "dispatcher", Dispatcher, "the dispatcher")

    def outbox() -> Outbox:
        return _started(runtime, "outbox", Outbox, "the outbox")

    def tools() -> Tools:
        return _started(runtime, "tools", Tools, "tools")

    def reader() -> ReaderPool:
        return _started(runtime, "reader", ReaderPool, "the reader processes")

    def jmap(state: State) -> JmapService:
        db()  # 503 before the database is open
        return for_runtime(state)

    providers: dict[str, Callable[..., object]] = {
        "config": config, "db": db, "policies": policies, "reception": reception, "reader": reader,
        "dispatcher": dispatcher, "outbox": outbox, "tools": tools, "jmap": jmap,
    }
    return {name: Provide(provide, sync_to_thread=False) for name, provide in providers.items()}
