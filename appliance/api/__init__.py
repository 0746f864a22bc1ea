"""HTTP API handlers, one module per resource; ``ROUTES`` lists them all for the app."""

from litestar.types import ControllerRouterHandler

from appliance.api.audit import AuditController
from appliance.api.hook import mta_hook
from appliance.api.quarantine import QuarantineController
from appliance.api.usage import report_usage

ROUTES: list[ControllerRouterHandler] = [AuditController, QuarantineController, report_usage,
                                         mta_hook]
