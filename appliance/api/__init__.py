"""HTTP API handlers, one module per resource; ``ROUTES`` lists them all for the app."""

from litestar.types import ControllerRouterHandler

from appliance.api.audit import AuditController
from appliance.api.deliveries import DeliveryController, EndpointController
from appliance.api.events import event_stream_handler
from appliance.api.hook import mta_hook
from appliance.api.messages import MessageController
from appliance.api.metrics import metrics
from appliance.api.quarantine import QuarantineController
from appliance.api.tokens import introspect_token
from appliance.api.usage import report_usage

ROUTES: list[ControllerRouterHandler] = [AuditController, QuarantineController, report_usage,
                                         mta_hook, DeliveryController, EndpointController,
                                         event_stream_handler, introspect_token, MessageController, metrics]
